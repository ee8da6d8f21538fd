// The core of `juice notify`: API events in, desktop notifications out. No
// I/O, no clock of its own: the caller passes every event and the current
// time, asks poll() what to show and when to come back (next_due()), and
// hands the results to a sink (libnotify, or stdout for --dry-run).
//
// What is shown:
// - `message.received`  -> "Alice" / the text (cut to `max_text` code points)
// - `contact.request`   -> "Contact request from Alice" / their message
// - `presence`          -> "Alice is online" / the note, only on a change from
//                          offline (or unknown) to online; the starting states
//                          come from `contacts.list`, so start-up is quiet.
// Names come from `contacts.list` (set_contacts), else the name carried by
// the event (`contact.request`), else the first 8 hex digits of the id.
//
// Rate limit: the first event of a burst is held for `window`; everything
// that arrives meanwhile joins it, and the lot becomes ONE notification
// ("Alice: 5 new messages", "3 contacts came online", or a combined summary).
// After a notification the next one waits until `min_interval` has passed;
// events arriving meanwhile are merged into it.
//
// Robustness: any JSON is accepted; an event whose needed fields are missing
// or of the wrong type is skipped. Nothing here throws on input. All text
// that comes out is valid UTF-8 without control characters (except '\n'
// between body lines), plain text (the sink escapes it for servers that
// parse markup).
//
// Not thread-safe: one thread owns a Notifier.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstddef>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace juice::notify {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// The freedesktop urgency levels (hint "urgency", a byte 0..2).
enum class Urgency { low = 0, normal = 1, critical = 2 };
std::string_view to_string(Urgency u) noexcept;

struct Notification {
    std::string summary;  // one line, never empty
    std::string body;     // may be empty; lines separated by '\n'
    Urgency urgency = Urgency::normal;
    // A freedesktop category: "im.received" (messages, and combined summaries
    // holding messages), "im" (contact requests), "presence.online".
    std::string category;
    // Notifications with the same key replace each other on screen (one
    // bubble per conversation): "messages:<id>", "messages", "request:<id>",
    // "requests", "presence", "juice" (a combined summary).
    std::string replace_key;

    bool operator==(const Notification&) const = default;
};

// Defaults also documented in docs/API.md (`juice notify`).
struct NotifierOptions {
    std::chrono::milliseconds window{400};         // hold the first event of a burst this long
    std::chrono::milliseconds min_interval{3000};  // at least this long between two notifications
    std::size_t max_text = 200;                    // code points of a message or note shown
};

// What the caller should do after on_event().
enum class Followup {
    none,
    refresh_names,  // call contacts.list and pass it to set_contacts(..., names)
    resync,         // events were lost: call contacts.list and pass it to set_contacts(..., resync)
};

// How set_contacts() treats the online states in the list.
enum class ContactsUpdate {
    initial,  // take them as they are, announce nothing (start-up)
    names,    // only names; online states only for ids not seen yet (queued events are newer)
    resync,   // take them, announcing contacts that went from offline to online
};

class Notifier {
public:
    explicit Notifier(NotifierOptions options = {});

    // Takes a `contacts.list` result (an array of {id, name, online, ...});
    // anything else is ignored, as are entries without a string id.
    void set_contacts(const json& list, ContactsUpdate mode, Clock::time_point now);

    // Takes one event (the params of an `event` notification, {"type": ...}).
    // Events it does not use, and malformed ones, are ignored.
    [[nodiscard]] Followup on_event(const json& event, Clock::time_point now);

    // The notification due at `now`, if any (at most one per call; after it,
    // nothing is due before `now + min_interval`).
    std::optional<Notification> poll(Clock::time_point now);

    // Everything held, now, ignoring the timing (for a clean exit).
    std::optional<Notification> flush(Clock::time_point now);

    // When poll() will have something to return; nullopt while nothing is held.
    std::optional<Clock::time_point> next_due() const;

    // The name shown for an id (see the top of this file).
    std::string name_of(const std::string& id) const;

    const NotifierOptions& options() const { return m_options; }

private:
    struct Sender {
        std::string id;
        std::size_t count = 0;
        std::string last_text;
    };
    struct Request {
        std::string id;
        std::string message;
    };
    struct Online {
        std::string id;
        std::string note;
    };
    // What is held for the next notification.
    struct Batch {
        std::vector<Sender> senders;  // in order of their first message
        std::size_t messages = 0;     // all messages, also those of senders past the cap
        std::size_t other_senders = 0;
        std::vector<Request> requests;
        std::size_t other_requests = 0;
        std::vector<Online> online;
        std::size_t other_online = 0;
        bool empty() const {
            return messages == 0 && requests.empty() && other_requests == 0 && online.empty() &&
                   other_online == 0;
        }
    };

    void held(Clock::time_point now);  // something was added to the batch
    void came_online(const std::string& id, std::string note, Clock::time_point now);
    void went_offline(const std::string& id);
    Followup learn_id(const std::string& id);
    Notification build() const;
    std::string text(std::string_view raw) const;  // a message or note, cleaned and cut

    NotifierOptions m_options;
    std::map<std::string, std::string> m_names;        // id -> name, from contacts.list
    std::map<std::string, std::string> m_event_names;  // id -> name carried by an event
    std::map<std::string, bool> m_online;              // last known online state per id
    std::set<std::string> m_refreshed_for;             // unknown ids we already asked names for
    Batch m_batch;
    std::optional<Clock::time_point> m_due;
    std::optional<Clock::time_point> m_last_shown;
};

// Text helpers, exposed for the sinks and the tests.
// Valid UTF-8 out of anything: invalid sequences, C0/C1 control characters
// and DEL become U+FFFD, a tab a space; '\n' is kept when `keep_newlines`,
// else becomes a space.
std::string clean_text(std::string_view s, bool keep_newlines);
// At most `max` code points of valid UTF-8 `s`, ending in "…" when cut.
std::string cut_text(std::string_view s, std::size_t max);

}  // namespace juice::notify
