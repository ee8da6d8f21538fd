#include "fake_notification_server.hpp"

#include <gio/gio.h>

#include <condition_variable>
#include <fstream>
#include <sstream>

namespace juice::test {

namespace fs = std::filesystem;

PrivateBus::PrivateBus(const fs::path& dir) {
    const fs::path socket_dir = dir / "bus";
    fs::create_directories(socket_dir);
    const fs::path config = dir / "bus.conf";
    std::ofstream(config)
        << R"(<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir=)"
        << socket_dir.string() << R"(</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
)";
    m_proc = std::make_unique<Process>("dbus-daemon",
                                       std::vector<std::string>{"--config-file=" + config.string(),
                                                                "--print-address", "--nofork", "--nosyslog"},
                                       dir / "dbus-daemon.log");
    auto address_line = [&] {
        std::istringstream log(m_proc->log());
        for (std::string line; std::getline(log, line);)
            if (line.starts_with("unix:") && !log.eof()) return line;  // a complete line
        return std::string();
    };
    wait_until([&] { return !address_line().empty() || !m_proc->running(); }, 10s);
    m_address = address_line();
    if (m_address.empty())
        error = "dbus-daemon did not start (is the dbus-daemon package installed?): " + m_proc->log();
}

namespace {

constexpr const char* k_name = "org.freedesktop.Notifications";
constexpr const char* k_path = "/org/freedesktop/Notifications";
constexpr const char* k_xml = R"(<node>
  <interface name="org.freedesktop.Notifications">
    <method name="Notify">
      <arg type="s" direction="in"/><arg type="u" direction="in"/><arg type="s" direction="in"/>
      <arg type="s" direction="in"/><arg type="s" direction="in"/><arg type="as" direction="in"/>
      <arg type="a{sv}" direction="in"/><arg type="i" direction="in"/>
      <arg type="u" direction="out"/>
    </method>
    <method name="CloseNotification"><arg type="u" direction="in"/></method>
    <method name="GetCapabilities"><arg type="as" direction="out"/></method>
    <method name="GetServerInformation">
      <arg type="s" direction="out"/><arg type="s" direction="out"/>
      <arg type="s" direction="out"/><arg type="s" direction="out"/>
    </method>
    <signal name="NotificationClosed"><arg type="u"/><arg type="u"/></signal>
    <signal name="ActionInvoked"><arg type="u"/><arg type="s"/></signal>
  </interface>
</node>)";

}  // namespace

struct FakeNotificationServer::State {
    std::string address;
    std::vector<std::string> capabilities;
    std::uint32_t next_id = 1;

    mutable std::mutex mutex;
    std::condition_variable cv;
    bool started = false;  // the thread has set up (or failed to)
    bool ok = false;
    std::string error;
    std::vector<Received> received;
    int info_calls = 0;
    GMainContext* context = nullptr;  // owned by the thread
    GMainLoop* loop = nullptr;
};

namespace {

using State = FakeNotificationServer::State;
using Received = FakeNotificationServer::Received;

void on_method_call(GDBusConnection*, const gchar*, const gchar*, const gchar*, const gchar* method,
                    GVariant* params, GDBusMethodInvocation* invocation, gpointer user_data) {
    auto* state = static_cast<State*>(user_data);
    const std::string_view name(method);
    if (name == "GetServerInformation") {
        std::lock_guard lock(state->mutex);
        ++state->info_calls;
        g_dbus_method_invocation_return_value(
            invocation, g_variant_new("(ssss)", "juice-test-server", "juice", "1.0", "1.2"));
    } else if (name == "GetCapabilities") {
        GVariantBuilder caps;
        g_variant_builder_init(&caps, G_VARIANT_TYPE("as"));
        for (const auto& c : state->capabilities) g_variant_builder_add(&caps, "s", c.c_str());
        g_dbus_method_invocation_return_value(invocation, g_variant_new("(as)", &caps));
    } else if (name == "Notify") {
        const gchar *app = nullptr, *icon = nullptr, *summary = nullptr, *body = nullptr;
        guint32 replaces = 0;
        gint32 timeout = 0;
        GVariant *actions = nullptr, *hints = nullptr;
        g_variant_get(params, "(&su&s&s&s@as@a{sv}i)", &app, &replaces, &icon, &summary, &body, &actions,
                      &hints, &timeout);
        Received r{app, icon, summary, body, {}, replaces, 0, -1};
        guchar urgency = 0;
        if (g_variant_lookup(hints, "urgency", "y", &urgency)) r.urgency = urgency;
        const gchar* category = nullptr;
        if (g_variant_lookup(hints, "category", "&s", &category)) r.category = category;
        g_variant_unref(actions);
        g_variant_unref(hints);
        {
            std::lock_guard lock(state->mutex);
            r.id = replaces != 0 ? replaces : state->next_id++;
            state->received.push_back(r);
        }
        g_dbus_method_invocation_return_value(invocation, g_variant_new("(u)", r.id));
    } else if (name == "CloseNotification") {
        g_dbus_method_invocation_return_value(invocation, nullptr);
    } else {
        g_dbus_method_invocation_return_error(invocation, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_METHOD, "no %s",
                                              method);
    }
}

void serve(const std::shared_ptr<State>& state) {
    GMainContext* context = g_main_context_new();
    g_main_context_push_thread_default(context);
    GMainLoop* loop = g_main_loop_new(context, FALSE);
    GError* error = nullptr;
    std::string failure;
    guint registration = 0;
    GDBusNodeInfo* node = nullptr;

    GDBusConnection* bus = g_dbus_connection_new_for_address_sync(
        state->address.c_str(),
        static_cast<GDBusConnectionFlags>(G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                          G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION),
        nullptr, nullptr, &error);
    if (bus) node = g_dbus_node_info_new_for_xml(k_xml, &error);
    if (node) {
        GDBusInterfaceVTable vtable{};
        vtable.method_call = on_method_call;
        registration = g_dbus_connection_register_object(bus, k_path, node->interfaces[0], &vtable,
                                                         state.get(), nullptr, &error);
    }
    if (registration != 0) {
        GVariant* reply = g_dbus_connection_call_sync(
            bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "RequestName",
            g_variant_new("(su)", k_name, 4u /* DO_NOT_QUEUE */), G_VARIANT_TYPE("(u)"),
            G_DBUS_CALL_FLAGS_NONE, 5000, nullptr, &error);
        if (reply) {
            guint32 code = 0;
            g_variant_get(reply, "(u)", &code);
            g_variant_unref(reply);
            if (code != 1)
                failure =
                    "the notification name is taken (RequestName answered " + std::to_string(code) + ")";
        }
    }
    if (error) {
        failure = error->message;
        g_clear_error(&error);
    }
    {
        std::lock_guard lock(state->mutex);
        state->started = true;
        state->ok = failure.empty() && registration != 0;
        state->error = failure;
        state->context = context;
        state->loop = loop;
    }
    state->cv.notify_all();

    if (failure.empty() && registration != 0) g_main_loop_run(loop);

    if (registration != 0) g_dbus_connection_unregister_object(bus, registration);
    if (bus) {
        g_dbus_connection_close_sync(bus, nullptr, nullptr);
        g_object_unref(bus);
    }
    if (node) g_dbus_node_info_unref(node);
    g_main_loop_unref(loop);
    g_main_context_pop_thread_default(context);
    g_main_context_unref(context);
}

}  // namespace

FakeNotificationServer::FakeNotificationServer(const std::string& address,
                                               std::vector<std::string> capabilities, std::uint32_t first_id)
    : m_state(std::make_shared<State>()) {
    m_state->address = address;
    m_state->capabilities = std::move(capabilities);
    m_state->next_id = first_id;
    m_thread = std::thread([state = m_state] { serve(state); });
    std::unique_lock lock(m_state->mutex);
    m_state->cv.wait(lock, [&] { return m_state->started; });
}

FakeNotificationServer::~FakeNotificationServer() {
    {
        std::lock_guard lock(m_state->mutex);
        if (m_state->ok) {
            // Quit from inside the loop, so it works whether or not it runs yet.
            GSource* quit = g_idle_source_new();
            g_source_set_callback(
                quit,
                [](gpointer loop) -> gboolean {
                    g_main_loop_quit(static_cast<GMainLoop*>(loop));
                    return G_SOURCE_REMOVE;
                },
                m_state->loop, nullptr);
            g_source_attach(quit, m_state->context);
            g_source_unref(quit);
        }
    }
    m_thread.join();
}

bool FakeNotificationServer::ready() const {
    std::lock_guard lock(m_state->mutex);
    return m_state->ok;
}

std::string FakeNotificationServer::error() const {
    std::lock_guard lock(m_state->mutex);
    return m_state->error;
}

std::vector<FakeNotificationServer::Received> FakeNotificationServer::received() const {
    std::lock_guard lock(m_state->mutex);
    return m_state->received;
}

int FakeNotificationServer::info_calls() const {
    std::lock_guard lock(m_state->mutex);
    return m_state->info_calls;
}

}  // namespace juice::test
