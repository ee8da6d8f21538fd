#include "notify/notifier.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

namespace juice::notify {

namespace {

// A burst from more senders than this is summed up without their details,
// so one batch stays small whatever arrives.
constexpr std::size_t k_max_held = 64;
constexpr std::size_t k_max_name = 64;          // code points of a name
constexpr std::size_t k_max_line_text = 80;     // code points of a message in a list line
constexpr std::size_t k_max_listed = 5;         // names or senders listed in one body
constexpr std::size_t k_max_remembered = 4096;  // event names, ids asked about

const std::string k_replacement = "\xEF\xBF\xBD";  // U+FFFD

// A string member, or nullptr when missing or not a string.
const std::string* str(const json& j, const char* key) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string()) return nullptr;
    return it->get_ptr<const std::string*>();
}

std::optional<bool> boolean(const json& j, const char* key) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_boolean()) return std::nullopt;
    return it->get<bool>();
}

std::string trim(std::string s) {
    auto not_space = [](char c) { return c != ' ' && c != '\n'; };
    s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
    s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
    return s;
}

std::string plural(std::size_t n, std::string_view one, std::string_view many) {
    return fmt::format("{} {}", n, n == 1 ? one : many);
}

// "Alice", "Alice and Bob", "Alice, Bob and Carol", "A, B, C, D, E and 3 more".
std::string join_names(const std::vector<std::string>& names, std::size_t more) {
    std::string out;
    const std::size_t listed = std::min(names.size(), k_max_listed);
    more += names.size() - listed;
    for (std::size_t i = 0; i < listed; ++i) {
        if (i > 0) out += (i + 1 == listed && more == 0) ? " and " : ", ";
        out += names[i];
    }
    if (more > 0) out += fmt::format(" and {} more", more);
    return out;
}

template <class T, class Id>
T* find_id(std::vector<T>& v, const Id& id) {
    auto it = std::find_if(v.begin(), v.end(), [&](const T& x) { return x.id == id; });
    return it == v.end() ? nullptr : &*it;
}

}  // namespace

std::string_view to_string(Urgency u) noexcept {
    switch (u) {
        case Urgency::low:
            return "low";
        case Urgency::normal:
            return "normal";
        case Urgency::critical:
            return "critical";
    }
    return "normal";
}

std::string clean_text(std::string_view s, bool keep_newlines) {
    std::string out;
    out.reserve(s.size());
    std::size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            if (c == '\n')
                out.push_back(keep_newlines ? '\n' : ' ');
            else if (c == '\t')
                out.push_back(' ');
            else if (c < 0x20 || c == 0x7f)
                out += k_replacement;
            else
                out.push_back(static_cast<char>(c));
            ++i;
            continue;
        }
        // A multi-byte sequence: check its length, continuation bytes and
        // range (no overlong forms, no surrogates, nothing past U+10FFFF).
        std::size_t len = 0;
        char32_t cp = 0;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07;
        }
        bool valid = len > 0 && i + len <= s.size();
        for (std::size_t k = 1; valid && k < len; ++k) {
            const auto cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xC0) != 0x80) valid = false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if (valid && len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) valid = false;
        if (valid && len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) valid = false;
        if (!valid) {
            out += k_replacement;
            ++i;  // resynchronise on the next byte
            continue;
        }
        if (cp >= 0x80 && cp <= 0x9F)
            out += k_replacement;  // C1 controls
        else
            out.append(s.substr(i, len));
        i += len;
    }
    return out;
}

std::string cut_text(std::string_view s, std::size_t max) {
    std::size_t count = 0;
    for (char c : s)
        if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++count;
    if (count <= max) return std::string(s);
    if (max == 0) return {};
    // Keep max - 1 code points, then the ellipsis: the cut falls before a lead byte.
    std::size_t kept = 0, end = 0;
    for (; end < s.size(); ++end) {
        if ((static_cast<unsigned char>(s[end]) & 0xC0) != 0x80) {
            if (kept == max - 1) break;
            ++kept;
        }
    }
    return std::string(s.substr(0, end)) + "…";
}

Notifier::Notifier(NotifierOptions options) : m_options(options) {}

std::string Notifier::text(std::string_view raw) const {
    return cut_text(trim(clean_text(raw, true)), m_options.max_text);
}

std::string Notifier::name_of(const std::string& id) const {
    if (auto it = m_names.find(id); it != m_names.end() && !it->second.empty()) return it->second;
    if (auto it = m_event_names.find(id); it != m_event_names.end() && !it->second.empty()) return it->second;
    if (id.empty()) return "someone";
    return clean_text(id.substr(0, 8), false);
}

void Notifier::set_contacts(const json& list, ContactsUpdate mode, Clock::time_point now) {
    if (!list.is_array()) return;
    std::map<std::string, std::string> names;
    for (const auto& c : list) {
        if (!c.is_object()) continue;
        const std::string* id = str(c, "id");
        if (!id || id->empty()) continue;
        if (const std::string* name = str(c, "name"))
            names[*id] = cut_text(trim(clean_text(*name, false)), k_max_name);
        const auto online = boolean(c, "online");
        if (!online) continue;
        auto prev = m_online.find(*id);
        switch (mode) {
            case ContactsUpdate::initial:
                m_online[*id] = *online;
                break;
            case ContactsUpdate::names:
                if (prev == m_online.end()) m_online[*id] = *online;
                break;
            case ContactsUpdate::resync:
                if (!*online) {
                    went_offline(*id);
                } else if (prev == m_online.end()) {
                    m_online[*id] = true;
                } else if (!prev->second) {
                    const std::string* note = str(c, "note");
                    came_online(*id, note ? *note : std::string(), now);
                }
                break;
        }
    }
    m_names = std::move(names);
}

Followup Notifier::on_event(const json& event, Clock::time_point now) {
    if (!event.is_object()) return Followup::none;
    const std::string* type = str(event, "type");
    if (!type) return Followup::none;

    if (*type == "message.received") {
        const std::string* from = str(event, "from");
        const std::string* body = str(event, "text");
        if (!from || from->empty() || !body) return Followup::none;
        if (Sender* s = find_id(m_batch.senders, *from)) {
            ++s->count;
            s->last_text = text(*body);
        } else if (m_batch.senders.size() < k_max_held) {
            m_batch.senders.push_back({*from, 1, text(*body)});
        } else {
            ++m_batch.other_senders;
        }
        ++m_batch.messages;
        held(now);
        return learn_id(*from);
    }

    if (*type == "contact.request") {
        const std::string* id = str(event, "id");
        if (!id || id->empty()) return Followup::none;
        if (const std::string* name = str(event, "name")) {
            if (m_event_names.size() >= k_max_remembered) m_event_names.clear();
            m_event_names[*id] = cut_text(trim(clean_text(*name, false)), k_max_name);
        }
        const std::string* message = str(event, "message");
        std::string shown = message ? text(*message) : std::string();
        if (Request* r = find_id(m_batch.requests, *id))
            r->message = std::move(shown);
        else if (m_batch.requests.size() < k_max_held)
            m_batch.requests.push_back({*id, std::move(shown)});
        else
            ++m_batch.other_requests;
        held(now);
        return Followup::none;
    }

    if (*type == "presence") {
        const std::string* id = str(event, "id");
        if (!id || id->empty()) return Followup::none;
        std::optional<bool> online = boolean(event, "online");
        if (!online) {
            // Older or partial events: fall back on the status.
            const std::string* status = str(event, "status");
            if (!status) return Followup::none;
            online = *status != "offline";
        }
        if (*online) {
            auto prev = m_online.find(*id);
            if (prev == m_online.end() || !prev->second) {
                const std::string* note = str(event, "note");
                came_online(*id, note ? *note : std::string(), now);
            }
        } else {
            went_offline(*id);
        }
        return learn_id(*id);
    }

    if (*type == "contact.state") {
        const std::string* id = str(event, "id");
        const std::string* state = str(event, "state");
        if (id && state && *state == "removed") m_online.erase(*id);
        return Followup::refresh_names;
    }

    if (*type == "events_dropped") return Followup::resync;
    return Followup::none;
}

Followup Notifier::learn_id(const std::string& id) {
    if (m_names.count(id) || m_refreshed_for.count(id)) return Followup::none;
    // Ask once per unknown id: a stranger that is not in the list stays a short id.
    if (m_refreshed_for.size() >= k_max_remembered) m_refreshed_for.clear();
    m_refreshed_for.insert(id);
    return Followup::refresh_names;
}

void Notifier::came_online(const std::string& id, std::string note, Clock::time_point now) {
    m_online[id] = true;
    if (Online* o = find_id(m_batch.online, id))
        o->note = text(note);
    else if (m_batch.online.size() < k_max_held)
        m_batch.online.push_back({id, text(note)});
    else
        ++m_batch.other_online;
    held(now);
}

void Notifier::went_offline(const std::string& id) {
    m_online[id] = false;
    // Online and gone again within one hold: nothing to announce.
    auto& online = m_batch.online;
    online.erase(std::remove_if(online.begin(), online.end(), [&](const Online& o) { return o.id == id; }),
                 online.end());
    if (m_batch.empty()) m_due.reset();
}

void Notifier::held(Clock::time_point now) {
    if (m_due) return;  // joins the burst already held
    Clock::time_point due = now + m_options.window;
    if (m_last_shown) due = std::max(due, *m_last_shown + m_options.min_interval);
    m_due = due;
}

std::optional<Clock::time_point> Notifier::next_due() const {
    return m_due;
}

std::optional<Notification> Notifier::poll(Clock::time_point now) {
    if (!m_due || now < *m_due) return std::nullopt;
    return flush(now);
}

std::optional<Notification> Notifier::flush(Clock::time_point now) {
    m_due.reset();
    if (m_batch.empty()) return std::nullopt;
    Notification n = build();
    m_batch = Batch{};
    m_last_shown = now;
    return n;
}

Notification Notifier::build() const {
    const Batch& b = m_batch;
    const std::size_t senders = b.senders.size() + b.other_senders;
    const std::size_t requests = b.requests.size() + b.other_requests;
    const std::size_t online = b.online.size() + b.other_online;
    const bool one_sender = b.senders.size() == 1 && b.other_senders == 0;
    const bool one_request = b.requests.size() == 1 && b.other_requests == 0;
    const bool one_online = b.online.size() == 1 && b.other_online == 0;
    const int kinds = (b.messages > 0) + (requests > 0) + (online > 0);

    auto sender_lines = [&] {
        std::vector<std::string> lines;
        for (std::size_t i = 0; i < b.senders.size() && i < k_max_listed; ++i) {
            const Sender& s = b.senders[i];
            std::string who = s.count == 1 ? name_of(s.id) : fmt::format("{} ({})", name_of(s.id), s.count);
            lines.push_back(
                fmt::format("{}: {}", who, cut_text(clean_text(s.last_text, false), k_max_line_text)));
        }
        const std::size_t rest = senders - std::min(b.senders.size(), k_max_listed);
        if (rest > 0)
            lines.push_back(fmt::format("and {} more {}", rest, rest == 1 ? "contact" : "contacts"));
        return fmt::format("{}", fmt::join(lines, "\n"));
    };
    auto request_names = [&] {
        std::vector<std::string> names;
        for (const auto& r : b.requests) names.push_back(name_of(r.id));
        return join_names(names, b.other_requests);
    };
    auto online_names = [&] {
        std::vector<std::string> names;
        for (const auto& o : b.online) names.push_back(name_of(o.id));
        return join_names(names, b.other_online);
    };

    Notification n;
    if (kinds == 1 && b.messages > 0) {
        n.category = "im.received";
        if (one_sender) {
            const Sender& s = b.senders.front();
            n.summary =
                s.count == 1 ? name_of(s.id) : fmt::format("{}: {} new messages", name_of(s.id), s.count);
            n.body = s.last_text;
            n.replace_key = "messages:" + s.id;
        } else {
            n.summary = fmt::format("{} new messages from {} contacts", b.messages, senders);
            n.body = sender_lines();
            n.replace_key = "messages";
        }
    } else if (kinds == 1 && requests > 0) {
        n.category = "im";
        if (one_request) {
            const Request& r = b.requests.front();
            n.summary = "Contact request from " + name_of(r.id);
            n.body = r.message;
            n.replace_key = "request:" + r.id;
        } else {
            n.summary = fmt::format("{} contact requests", requests);
            n.body = "From " + request_names();
            n.replace_key = "requests";
        }
    } else if (kinds == 1) {
        n.category = "presence.online";
        n.urgency = Urgency::low;
        n.replace_key = "presence";
        if (one_online) {
            n.summary = name_of(b.online.front().id) + " is online";
            n.body = b.online.front().note;
        } else {
            n.summary = fmt::format("{} contacts came online", online);
            n.body = online_names();
        }
    } else {
        // Several kinds at once: one summary of all of them.
        std::vector<std::string> parts, lines;
        if (b.messages > 0) {
            parts.push_back(one_sender
                                ? fmt::format("{} from {}", plural(b.messages, "new message", "new messages"),
                                              name_of(b.senders.front().id))
                                : plural(b.messages, "new message", "new messages"));
            lines.push_back(sender_lines());
        }
        if (requests > 0) {
            parts.push_back(plural(requests, "contact request", "contact requests"));
            lines.push_back(
                fmt::format("Contact request{} from {}", requests == 1 ? "" : "s", request_names()));
        }
        if (online > 0) {
            parts.push_back(one_online ? name_of(b.online.front().id) + " is online"
                                       : fmt::format("{} contacts came online", online));
            if (!one_online) lines.push_back("Online: " + online_names());
        }
        n.summary = fmt::format("{}", fmt::join(parts, ", "));
        n.body = fmt::format("{}", fmt::join(lines, "\n"));
        n.category = b.messages > 0 ? "im.received" : "im";
        n.replace_key = "juice";
    }
    return n;
}

}  // namespace juice::notify
