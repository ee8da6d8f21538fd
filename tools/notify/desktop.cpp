#include "notify/desktop.hpp"

#include <fmt/format.h>
#include <gio/gio.h>
#include <libnotify/notify.h>

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <map>
#include <utility>

namespace juice::notify {

namespace {

constexpr const char* k_service = "org.freedesktop.Notifications";
constexpr const char* k_path = "/org/freedesktop/Notifications";
// Bubbles kept for replacing (one per conversation); the oldest is let go
// beyond this, so a long run with many contacts stays small.
constexpr std::size_t k_max_kept = 64;

class DesktopCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "juice.notify.desktop"; }
    std::string message(int e) const override {
        switch (static_cast<desktop_errc>(e)) {
            case desktop_errc::no_session_bus:
                return "no D-Bus session bus";
            case desktop_errc::no_service:
                return "no desktop notification service is running";
            case desktop_errc::init_failed:
                return "libnotify could not be initialised";
            case desktop_errc::show_failed:
                return "the notification service did not show a notification";
        }
        return "unknown desktop notification error";
    }
};

std::string bus_hint() {
    const char* address = std::getenv("DBUS_SESSION_BUS_ADDRESS");
    return fmt::format("DBUS_SESSION_BUS_ADDRESS={}", address && *address ? address : "(unset)");
}

// The text of a GError, which it frees.
std::string take_message(GError* error) {
    if (!error) return "unknown error";
    g_dbus_error_strip_remote_error(error);
    std::string message = error->message ? error->message : "unknown error";
    g_error_free(error);
    return message;
}

// Icon names from the freedesktop icon naming specification.
const char* icon_for(const Notification& n) {
    if (n.category == "presence.online") return "user-available";
    if (n.category == "im") return "contact-new";
    return "mail-message-new";
}

}  // namespace

const std::error_category& desktop_error_category() noexcept {
    static const DesktopCategory category;
    return category;
}

struct DesktopSink::Impl {
    GDBusConnection* bus = nullptr;  // the shared session connection, kept for libnotify
    ServerInfo server;
    std::map<std::string, NotifyNotification*> kept;  // replace_key -> its bubble
    std::deque<std::string> order;                    // keys of `kept`, oldest first

    ~Impl() {
        for (auto& entry : kept) g_object_unref(entry.second);
        if (notify_is_initted()) notify_uninit();
        if (bus) g_object_unref(bus);
    }
};

DesktopSink::DesktopSink(std::unique_ptr<Impl> impl) : m(std::move(impl)) {}
DesktopSink::DesktopSink(DesktopSink&&) noexcept = default;
DesktopSink& DesktopSink::operator=(DesktopSink&&) noexcept = default;
DesktopSink::~DesktopSink() = default;

const ServerInfo& DesktopSink::server() const {
    return m->server;
}

Result<DesktopSink> DesktopSink::open(const std::string& app_name, std::chrono::milliseconds timeout) {
    auto impl = std::make_unique<Impl>();
    GError* error = nullptr;
    impl->bus = g_bus_get_sync(G_BUS_TYPE_SESSION, nullptr, &error);
    if (!impl->bus)
        return make_error(desktop_errc::no_session_bus,
                          fmt::format("no desktop notification service is running: cannot reach the D-Bus "
                                      "session bus ({}; {}). Run juice notify inside your desktop session",
                                      take_message(error), bus_hint()));
    // GLib's shared connection raises SIGTERM when the bus goes away; a lost
    // bus is reported by show() instead.
    g_dbus_connection_set_exit_on_close(impl->bus, FALSE);

    const int timeout_ms = static_cast<int>(std::clamp<long long>(timeout.count(), 1, 600000));
    // This call also starts a D-Bus-activatable notification daemon.
    GVariant* info = g_dbus_connection_call_sync(impl->bus, k_service, k_path, k_service,
                                                 "GetServerInformation", nullptr, G_VARIANT_TYPE("(ssss)"),
                                                 G_DBUS_CALL_FLAGS_NONE, timeout_ms, nullptr, &error);
    if (!info) {
        const bool absent = g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_SERVICE_UNKNOWN) ||
                            g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_NAME_HAS_NO_OWNER);
        const bool silent = g_error_matches(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT) ||
                            g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_NO_REPLY) ||
                            g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_TIMEOUT);
        std::string detail = take_message(error);
        if (absent)
            return make_error(desktop_errc::no_service,
                              fmt::format("no desktop notification service is running (is a notification "
                                          "daemon started in your session? nothing owns {} on the session "
                                          "bus; {})",
                                          k_service, bus_hint()));
        if (silent)
            return make_error(desktop_errc::no_service,
                              fmt::format("the desktop notification service did not answer within {} ms ({}; "
                                          "{})",
                                          timeout_ms, detail, bus_hint()));
        return make_error(desktop_errc::no_service,
                          fmt::format("no usable desktop notification service: {} ({})", detail, bus_hint()));
    }
    const gchar *name = nullptr, *vendor = nullptr, *version = nullptr, *spec = nullptr;
    g_variant_get(info, "(&s&s&s&s)", &name, &vendor, &version, &spec);
    impl->server = {name, vendor, version, spec, false};
    g_variant_unref(info);

    // Without its capabilities we send plain text (a markup server then shows
    // a stray `&` or `<` as it is, or drops it: never a failure).
    GVariant* caps = g_dbus_connection_call_sync(impl->bus, k_service, k_path, k_service, "GetCapabilities",
                                                 nullptr, G_VARIANT_TYPE("(as)"), G_DBUS_CALL_FLAGS_NONE,
                                                 timeout_ms, nullptr, &error);
    if (caps) {
        GVariantIter* it = nullptr;
        const gchar* cap = nullptr;
        g_variant_get(caps, "(as)", &it);
        while (g_variant_iter_next(it, "&s", &cap))
            if (std::string_view(cap) == "body-markup") impl->server.body_markup = true;
        g_variant_iter_free(it);
        g_variant_unref(caps);
    } else {
        g_clear_error(&error);
    }

    if (!notify_init(app_name.c_str()))
        return make_error(desktop_errc::init_failed,
                          "libnotify could not be initialised (notify_init failed)");
    return DesktopSink(std::move(impl));
}

Result<void> DesktopSink::show(const Notification& n) {
    std::string body = n.body;
    if (m->server.body_markup) {
        gchar* escaped = g_markup_escape_text(body.c_str(), static_cast<gssize>(body.size()));
        body = escaped;
        g_free(escaped);
    }
    const char* icon = icon_for(n);

    NotifyNotification* bubble = nullptr;
    if (auto it = m->kept.find(n.replace_key); it != m->kept.end()) {
        bubble = it->second;
        notify_notification_update(bubble, n.summary.c_str(), body.c_str(), icon);
    } else {
        bubble = notify_notification_new(n.summary.c_str(), body.c_str(), icon);
        if (m->kept.size() >= k_max_kept) {
            g_object_unref(m->kept[m->order.front()]);
            m->kept.erase(m->order.front());
            m->order.pop_front();
        }
        m->kept[n.replace_key] = bubble;
        m->order.push_back(n.replace_key);
    }
    notify_notification_set_urgency(bubble, static_cast<NotifyUrgency>(n.urgency));
    if (!n.category.empty()) notify_notification_set_category(bubble, n.category.c_str());

    GError* error = nullptr;
    if (notify_notification_show(bubble, &error)) return {};
    g_clear_error(&error);
    // The service may just have changed hands and GDBus not told libnotify
    // yet: let it catch up, then try once more.
    pump();
    if (notify_notification_show(bubble, &error)) return {};
    return make_error(desktop_errc::show_failed,
                      fmt::format("could not show a notification: {}", take_message(error)));
}

void DesktopSink::pump() {
    // Bounded, so a flood of D-Bus signals cannot keep us here.
    for (int i = 0; i < 1000 && g_main_context_iteration(nullptr, FALSE); ++i) {
    }
}

}  // namespace juice::notify
