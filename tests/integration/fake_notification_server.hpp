// For the `juice notify` integration tests: a private D-Bus session bus (a
// real dbus-daemon) and a tiny freedesktop notification server on it that
// records what it was asked to show.
#pragma once

#include "harness.hpp"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace juice::test {

// dbus-daemon on a socket in `dir`, with a configuration of our own: no
// service directories, so nothing on this machine (a real notification
// daemon) can be D-Bus-activated on it. Killed on destruction.
class PrivateBus {
public:
    explicit PrivateBus(const std::filesystem::path& dir);
    // The bus address for DBUS_SESSION_BUS_ADDRESS; empty if it did not start
    // (then `error` says why).
    const std::string& address() const { return m_address; }
    std::string error;

private:
    std::unique_ptr<Process> m_proc;
    std::string m_address;
};

// Owns org.freedesktop.Notifications on the bus at `address` and serves
// Notify, GetServerInformation, GetCapabilities and CloseNotification from
// its own thread (own GLib main context) until destroyed; destroying it
// closes its connection, so the name goes away with it.
class FakeNotificationServer {
public:
    struct Received {
        std::string app_name, app_icon, summary, body, category;
        std::uint32_t replaces_id = 0;
        std::uint32_t id = 0;  // what we answered
        int urgency = -1;      // the "urgency" hint, -1 if absent
    };

    FakeNotificationServer(const std::string& address, std::vector<std::string> capabilities = {"body"},
                           std::uint32_t first_id = 1);
    ~FakeNotificationServer();
    FakeNotificationServer(const FakeNotificationServer&) = delete;
    FakeNotificationServer& operator=(const FakeNotificationServer&) = delete;

    // True once the name is ours; else `error()` says why.
    bool ready() const;
    std::string error() const;
    std::vector<Received> received() const;
    int info_calls() const;

    struct State;  // shared with the server thread

private:
    std::shared_ptr<State> m_state;
    std::thread m_thread;
};

}  // namespace juice::test
