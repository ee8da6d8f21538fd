// Store: the daemon's durable state in one SQLite file (WAL mode):
// contacts, messages (history and outbox) and small settings.
//
// Threading: one Store is used by the daemon's loop thread only. Calls are
// synchronous (SQLite on a local file), each a single transaction unless
// wrapped in a Transaction.
//
// Durability: Sync::full fsyncs every commit (survives power loss);
// Sync::normal survives a crash of the daemon (kill -9) but can lose the last
// commits on power loss. Store::open defaults to full; juiced defaults to normal (docs/DESIGN.md).
#pragma once

#include "juice/crypto/ids.hpp"
#include "juice/crypto/result.hpp"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace juice::node {

enum class store_errc {
    open_failed = 1,  // cannot open or create the database file
    corrupt,          // the file is not a juice database, or is damaged
    too_new,          // schema written by a newer juice
    io_error,         // a statement failed (disk full, read-only, ...)
};
const std::error_category& store_error_category() noexcept;
inline std::error_code make_error_code(store_errc e) noexcept {
    return {static_cast<int>(e), store_error_category()};
}

enum class ContactState { pending_out, pending_in, mutual, blocked };
std::string_view to_string(ContactState s);
std::optional<ContactState> contact_state_from_string(std::string_view s);

enum class MessageState { queued = 0, sent = 1, delivered = 2, read = 3 };
std::string_view to_string(MessageState s);
std::optional<MessageState> message_state_from_string(std::string_view s);

struct ContactRecord {
    UserId id;
    std::string name;  // what the user calls this contact
    ContactState state = ContactState::pending_out;
    std::int64_t added = 0;       // Unix ms
    std::int64_t last_seen = 0;   // Unix ms, 0 = never
    Bytes pubkey;                 // their public key (DER), empty until learned
    std::string request;          // pending_in: the message of their request
    std::int64_t request_ts = 0;  // the request's time (theirs if pending_in, ours if pending_out)
    bool operator==(const ContactRecord&) const = default;
};

struct MessageRecord {
    MessageId id;
    UserId from;
    UserId to;
    std::string text;
    std::int64_t ts = 0;  // sender's timestamp, Unix ms
    MessageState state = MessageState::queued;
    bool outgoing = false;    // written by this user
    std::int64_t seq = 0;     // local insertion order; set by the store
    std::uint64_t inbox = 0;  // outgoing: the inbox bundle carrying a copy (0 = none)
    bool operator==(const MessageRecord&) const = default;
};

// What an inbox bundle carries; decides how long we keep putting it.
enum class InboxKind {
    messages = 0,  // until every message in it is delivered
    control = 1,   // a contact request or answer: until answered / linked
    acks = 2,      // acks of messages that came through our inbox: until a link is up
    receipts = 3,  // read receipts: until receipt_retention
};

// One sealed DHT value we keep (re-)putting into a peer's inbox.
struct InboxValueRecord {
    std::uint64_t value_id = 0;
    UserId peer;
    std::uint64_t bundle = 0;
    InboxKind kind = InboxKind::messages;
    std::int64_t created = 0;  // Unix ms
    Bytes data;                // sealed bytes, put as they are
};

class Store {
public:
    enum class Sync { full, normal };

    // Opens or creates the database (file mode 0600), applies migrations.
    static Result<std::unique_ptr<Store>> open(const std::filesystem::path& file, Sync sync = Sync::full);
    ~Store();

    // Contacts
    Result<void> put_contact(const ContactRecord& c);  // insert or replace
    Result<std::optional<ContactRecord>> get_contact(const UserId& id);
    Result<std::vector<ContactRecord>> list_contacts();  // ordered by name, then id
    Result<void> remove_contact(const UserId& id);       // keeps message history
    Result<void> set_last_seen(const UserId& id, std::int64_t ts);

    // Messages
    // Inserts unless a message with the same id exists. Returns true if it
    // was new, false if it was a duplicate (the stored row is unchanged).
    Result<bool> add_message(MessageRecord& m);  // sets m.seq when inserted
    // Moves a message's state forward (queued < sent < delivered < read);
    // never backwards. Returns true if the state changed.
    Result<bool> advance_message(const MessageId& id, MessageState state);
    Result<std::optional<MessageRecord>> get_message(const MessageId& id);
    // Outgoing messages to `to` not yet delivered (queued or sent), oldest first.
    Result<std::vector<MessageRecord>> undelivered_to(const UserId& to);
    // The conversation with `peer` (messages from or to it), in conversation
    // order: by the sender's timestamp, then by seq. The newest `limit`
    // before the message with seq `before_seq` (if given), oldest first.
    Result<std::vector<MessageRecord>> history(const UserId& peer, std::size_t limit,
                                               std::optional<std::int64_t> before_seq = std::nullopt);
    // Marks incoming messages from `peer` up to and including the message
    // with this seq (in conversation order) as read; returns the ids that
    // changed.
    Result<std::vector<MessageId>> mark_read_until(const UserId& peer, std::int64_t seq);
    // The newest timestamp of an outgoing message (0 if none).
    Result<std::int64_t> max_outgoing_ts();
    Result<void> set_message_inbox(const MessageId& id, std::uint64_t bundle);
    // Outgoing messages of this bundle not yet delivered.
    Result<std::size_t> bundle_pending(std::uint64_t bundle);
    // Moves the bundle's queued messages to sent; returns their ids.
    Result<std::vector<MessageId>> mark_bundle_sent(std::uint64_t bundle);

    // Inbox values we keep putting, oldest first.
    Result<void> add_inbox_value(const InboxValueRecord& v);
    Result<std::vector<InboxValueRecord>> inbox_values();
    Result<void> remove_inbox_bundle(std::uint64_t bundle);
    Result<void> remove_inbox_kind(const UserId& peer, InboxKind kind);

    // Declined contact requests: requests from `id` made at or before
    // request_ts are not shown again.
    Result<std::optional<std::int64_t>> declined_until(const UserId& id);
    Result<void> set_declined(const UserId& id, std::int64_t request_ts);

    // Settings (small key/value strings)
    Result<std::optional<std::string>> get_setting(std::string_view key);
    Result<void> set_setting(std::string_view key, std::string_view value);

    // Groups several calls into one transaction (one fsync). Nesting is not
    // supported. Rolls back if destroyed without commit().
    class Transaction {
    public:
        explicit Transaction(Store& s);
        ~Transaction();
        Result<void> commit();
        Transaction(const Transaction&) = delete;
        Transaction& operator=(const Transaction&) = delete;

    private:
        Store* m_store;
        bool m_done = false;
    };

    struct Impl;

private:
    explicit Store(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

}  // namespace juice::node

template <>
struct std::is_error_code_enum<juice::node::store_errc> : std::true_type {};
