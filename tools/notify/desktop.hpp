// The desktop sink of `juice notify`: shows Notifications through libnotify
// on the freedesktop notification service (org.freedesktop.Notifications on
// the session bus). GLib and libnotify stay behind this header.
//
// One DesktopSink per process (libnotify keeps global state), used from one
// thread. Calls block on D-Bus: open() for at most its timeout, show() until
// the service answers (libnotify's default D-Bus timeout, 25 s, if it hangs).
#pragma once

#include "juice/crypto/result.hpp"
#include "notify/notifier.hpp"

#include <chrono>
#include <memory>
#include <string>
#include <system_error>

namespace juice::notify {

enum class desktop_errc {
    no_session_bus = 1,  // DBUS_SESSION_BUS_ADDRESS unset or nothing listening there
    no_service,          // nothing owns (or can start) org.freedesktop.Notifications, or it did not answer
    init_failed,         // libnotify refused to initialise
    show_failed,         // the service refused a notification or went away
};
const std::error_category& desktop_error_category() noexcept;
inline std::error_code make_error_code(desktop_errc e) noexcept {
    return {static_cast<int>(e), desktop_error_category()};
}

struct ServerInfo {
    std::string name, vendor, version, spec_version;
    bool body_markup = false;  // the server parses the body as markup: we escape it
};

class DesktopSink {
public:
    // Connects to the session bus and asks the notification service who it is
    // (which also starts it when it is D-Bus-activatable), waiting at most
    // `timeout`. Errors: no_session_bus, no_service, init_failed; their
    // message says what is missing and names DBUS_SESSION_BUS_ADDRESS.
    static Result<DesktopSink> open(const std::string& app_name, std::chrono::milliseconds timeout);

    DesktopSink(DesktopSink&&) noexcept;
    DesktopSink& operator=(DesktopSink&&) noexcept;
    ~DesktopSink();

    const ServerInfo& server() const;

    // Shows `n`, replacing the bubble last shown with the same replace_key.
    // Error show_failed (with the D-Bus error) when the service is gone or
    // refuses; the next call tries again.
    Result<void> show(const Notification& n);

    // Runs GLib's pending callbacks (D-Bus signals for libnotify: bubbles
    // closed, the service changing hands). Never blocks; call it regularly.
    void pump();

private:
    struct Impl;
    explicit DesktopSink(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m;
};

}  // namespace juice::notify

template <>
struct std::is_error_code_enum<juice::notify::desktop_errc> : std::true_type {};
