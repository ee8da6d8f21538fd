#include "juice/node/store.hpp"

#include <sqlite3.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <limits>
#include <span>
#include <utility>

namespace juice::node {
namespace {

class StoreCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "juice.store"; }

    std::string message(int ev) const override {
        switch (static_cast<store_errc>(ev)) {
            case store_errc::open_failed:
                return "the message database cannot be opened or created: check the data directory's "
                       "path and permissions";
            case store_errc::corrupt:
                return "the message database is damaged or is not a juice database: restore a backup or "
                       "move the file away";
            case store_errc::too_new:
                return "the message database was written by a newer version of juice: upgrade juice";
            case store_errc::io_error:
                return "reading or writing the message database failed (disk full, read-only, ...)";
        }
        return "unknown store error " + std::to_string(ev);
    }
};

// Schema history. k_migrations[i] upgrades user_version i to i + 1; entries
// are never edited once released, only appended (see node/STORE.md).
constexpr const char* k_migrations[] = {
    // 0 -> 1
    R"sql(
CREATE TABLE contacts(
    id BLOB PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    state INTEGER NOT NULL,
    added INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
);
CREATE TABLE messages(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id BLOB UNIQUE NOT NULL,
    sender BLOB NOT NULL,
    recipient BLOB NOT NULL,
    peer BLOB NOT NULL,
    text TEXT NOT NULL,
    ts INTEGER NOT NULL,
    state INTEGER NOT NULL,
    outgoing INTEGER NOT NULL
);
CREATE INDEX messages_by_peer ON messages(peer, seq);
CREATE INDEX messages_outbox ON messages(peer, seq) WHERE outgoing = 1 AND state < 2;
CREATE TABLE settings(
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
)sql",
    // 1 -> 2: contact requests, public keys, the DHT inbox, ordering by the
    // sender's clock.
    R"sql(
ALTER TABLE contacts ADD COLUMN pubkey BLOB NOT NULL DEFAULT x'';
ALTER TABLE contacts ADD COLUMN request TEXT NOT NULL DEFAULT '';
ALTER TABLE contacts ADD COLUMN request_ts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN inbox INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_by_time ON messages(peer, ts, seq);
CREATE INDEX messages_by_bundle ON messages(inbox) WHERE inbox != 0;
CREATE TABLE inbox_out(
    value_id INTEGER PRIMARY KEY,
    peer BLOB NOT NULL,
    bundle INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    created INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX inbox_out_by_peer ON inbox_out(peer, kind);
CREATE TABLE declined(
    id BLOB PRIMARY KEY NOT NULL,
    request_ts INTEGER NOT NULL
);
)sql",
};
constexpr int k_schema_version = static_cast<int>(std::size(k_migrations));
// "juic": marks the file as ours so another program's SQLite file is refused.
constexpr std::int32_t k_application_id = 0x6a756963;
constexpr std::size_t k_history_cap = 1000;
constexpr int k_busy_timeout_ms = 5000;

constexpr const char* k_message_columns = "seq, id, sender, recipient, text, ts, state, outgoing, inbox";
constexpr const char* k_contact_columns = "id, name, state, added, last_seen, pubkey, request, request_ts";

enum StmtId : std::size_t {
    put_contact_stmt,
    get_contact_stmt,
    list_contacts_stmt,
    remove_contact_stmt,
    set_last_seen_stmt,
    add_message_stmt,
    advance_message_stmt,
    get_message_stmt,
    undelivered_stmt,
    history_stmt,
    mark_read_stmt,
    seq_ts_stmt,
    max_outgoing_ts_stmt,
    set_inbox_stmt,
    bundle_pending_stmt,
    add_inbox_value_stmt,
    list_inbox_values_stmt,
    delete_bundle_stmt,
    delete_inbox_kind_stmt,
    get_declined_stmt,
    set_declined_stmt,
    bundle_sent_stmt,
    get_setting_stmt,
    set_setting_stmt,
    begin_stmt,
    commit_stmt,
    rollback_stmt,
    stmt_count,
};

std::string message_select(const char* tail) {
    return std::string("SELECT ") + k_message_columns + " FROM messages " + tail;
}

const std::array<std::string, stmt_count>& statement_sql() {
    static const std::array<std::string, stmt_count> sql = {
        "INSERT INTO contacts(id, name, state, added, last_seen, pubkey, request, request_ts) "
        "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(id) DO UPDATE SET name = ?2, state = ?3, "
        "added = ?4, last_seen = ?5, pubkey = ?6, request = ?7, request_ts = ?8",
        std::string("SELECT ") + k_contact_columns + " FROM contacts WHERE id = ?1",
        std::string("SELECT ") + k_contact_columns + " FROM contacts ORDER BY name, id",
        "DELETE FROM contacts WHERE id = ?1",
        "UPDATE contacts SET last_seen = ?2 WHERE id = ?1",
        "INSERT INTO messages(id, sender, recipient, peer, text, ts, state, outgoing) "
        "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(id) DO NOTHING",
        "UPDATE messages SET state = ?2 WHERE id = ?1 AND state < ?2",
        message_select("WHERE id = ?1"),
        // The WHERE terms match the partial index messages_outbox exactly.
        message_select("WHERE peer = ?1 AND outgoing = 1 AND state < 2 ORDER BY seq"),
        // Conversation order: the sender's clock, then arrival (messages_by_time).
        message_select("WHERE peer = ?1 AND (ts, seq) < (?2, ?3) ORDER BY ts DESC, seq DESC LIMIT ?4"),
        "UPDATE messages SET state = 3 WHERE peer = ?1 AND outgoing = 0 AND (ts, seq) <= (?2, ?3) "
        "AND state < 3 RETURNING seq, id",
        "SELECT ts FROM messages WHERE seq = ?1",
        "SELECT coalesce(max(ts), 0) FROM messages WHERE outgoing = 1",
        "UPDATE messages SET inbox = ?2 WHERE id = ?1",
        "SELECT count(*) FROM messages WHERE inbox = ?1 AND state < 2",
        "INSERT OR REPLACE INTO inbox_out(value_id, peer, bundle, kind, created, data) "
        "VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
        "SELECT value_id, peer, bundle, kind, created, data FROM inbox_out ORDER BY created, value_id",
        "DELETE FROM inbox_out WHERE bundle = ?1",
        "DELETE FROM inbox_out WHERE peer = ?1 AND kind = ?2",
        "SELECT request_ts FROM declined WHERE id = ?1",
        "INSERT INTO declined(id, request_ts) VALUES(?1, ?2) ON CONFLICT(id) DO UPDATE SET request_ts = "
        "max(request_ts, ?2)",
        "UPDATE messages SET state = 1 WHERE inbox = ?1 AND state = 0 RETURNING id",
        "SELECT value FROM settings WHERE key = ?1",
        "INSERT INTO settings(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
        "BEGIN IMMEDIATE",
        "COMMIT",
        "ROLLBACK",
    };
    return sql;
}

store_errc classify(int rc, store_errc fallback) {
    switch (rc & 0xff) {
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
            return store_errc::corrupt;
        case SQLITE_CANTOPEN:
            return store_errc::open_failed;
        default:
            return fallback;
    }
}

struct DbCloser {
    void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

struct StmtFinalizer {
    void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// A cached statement borrowed for one call: reset and unbound on scope exit so
// it holds no read lock and no pointers into the caller's buffers.
class StmtUse {
public:
    explicit StmtUse(sqlite3_stmt* s) : m_stmt(s) {}
    StmtUse(StmtUse&& o) noexcept : m_stmt(std::exchange(o.m_stmt, nullptr)) {}
    StmtUse& operator=(StmtUse&&) = delete;
    ~StmtUse() {
        if (m_stmt) {
            sqlite3_reset(m_stmt);
            sqlite3_clear_bindings(m_stmt);
        }
    }
    sqlite3_stmt* get() const { return m_stmt; }

private:
    sqlite3_stmt* m_stmt;
};

int bind_one(sqlite3_stmt* s, int i, std::span<const std::uint8_t> blob) {
    // A null data pointer would bind SQL NULL; an empty span is x''.
    static const std::uint8_t empty = 0;
    return sqlite3_bind_blob64(s, i, blob.data() ? blob.data() : &empty, blob.size(), SQLITE_STATIC);
}
int bind_one(sqlite3_stmt* s, int i, std::string_view text) {
    // A null data pointer would bind SQL NULL; an empty string_view is "".
    const char* p = text.data() ? text.data() : "";
    return sqlite3_bind_text64(s, i, p, text.size(), SQLITE_STATIC, SQLITE_UTF8);
}
int bind_one(sqlite3_stmt* s, int i, std::int64_t v) {
    return sqlite3_bind_int64(s, i, v);
}

template <class... Args>
int bind_all([[maybe_unused]] sqlite3_stmt* s, const Args&... args) {
    int rc = SQLITE_OK;
    [[maybe_unused]] int i = 0;
    ((rc = (rc == SQLITE_OK ? bind_one(s, ++i, args) : rc)), ...);
    return rc;
}

std::span<const std::uint8_t> column_blob(sqlite3_stmt* s, int col) {
    auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(s, col));
    auto n = static_cast<std::size_t>(sqlite3_column_bytes(s, col));
    if (!p) return {};
    return {p, n};
}

std::string column_text(sqlite3_stmt* s, int col) {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, col));
    auto n = static_cast<std::size_t>(sqlite3_column_bytes(s, col));
    if (!p) return {};
    return std::string(p, n);
}

bool header_is_sqlite(const std::filesystem::path& file, std::uintmax_t size) {
    // A database is at least one 512-byte page. SQLite itself would treat a
    // shorter non-empty file as an empty database and overwrite it.
    if (size < 512) return false;
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return true;  // let sqlite3_open_v2 report why it cannot be read
    char header[16] = {};
    auto n = ::read(fd, header, sizeof header);
    ::close(fd);
    return n == static_cast<ssize_t>(sizeof header) && std::memcmp(header, "SQLite format 3", 16) == 0;
}

// Creates the missing ancestors of `dir` with mode 0700 (the store holds
// private messages; the data directory should not be world-readable).
bool make_dirs(const std::filesystem::path& dir, std::string& why) {
    std::error_code ec;
    if (dir.empty() || std::filesystem::is_directory(dir, ec)) return true;
    if (!make_dirs(dir.parent_path(), why)) return false;
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
        why = "cannot create directory " + dir.string() + ": " + std::strerror(errno);
        return false;
    }
    return true;
}

}  // namespace

const std::error_category& store_error_category() noexcept {
    static const StoreCategory category;
    return category;
}

std::string_view to_string(ContactState s) {
    switch (s) {
        case ContactState::pending_out:
            return "pending_out";
        case ContactState::pending_in:
            return "pending_in";
        case ContactState::mutual:
            return "mutual";
        case ContactState::blocked:
            return "blocked";
    }
    return "unknown";
}

std::optional<ContactState> contact_state_from_string(std::string_view s) {
    for (auto st :
         {ContactState::pending_out, ContactState::pending_in, ContactState::mutual, ContactState::blocked})
        if (to_string(st) == s) return st;
    return std::nullopt;
}

std::string_view to_string(MessageState s) {
    switch (s) {
        case MessageState::queued:
            return "queued";
        case MessageState::sent:
            return "sent";
        case MessageState::delivered:
            return "delivered";
        case MessageState::read:
            return "read";
    }
    return "unknown";
}

std::optional<MessageState> message_state_from_string(std::string_view s) {
    for (auto st : {MessageState::queued, MessageState::sent, MessageState::delivered, MessageState::read})
        if (to_string(st) == s) return st;
    return std::nullopt;
}

struct Store::Impl {
    DbPtr db;
    std::filesystem::path file;
    std::array<StmtPtr, stmt_count> stmts;
    bool in_transaction = false;             // a Transaction object holds BEGIN
    const Transaction* failed_tx = nullptr;  // the last Transaction that could not begin
    std::string failed_tx_error;             // and why

    ~Impl() {
        // Statements must be finalized before the connection closes.
        for (auto& s : stmts) s.reset();
        db.reset();
    }

    Error error(int rc, std::string_view what, store_errc fallback = store_errc::io_error) const {
        std::string msg = "store " + file.string() + ": " + std::string(what) + ": ";
        msg += db ? sqlite3_errmsg(db.get()) : sqlite3_errstr(rc);
        auto code = classify(rc, fallback);
        if (code == store_errc::corrupt) msg += " (restore a backup or move the file away)";
        return make_error(code, std::move(msg));
    }

    Result<StmtUse> use(StmtId id) {
        auto& slot = stmts[id];
        if (!slot) {
            const auto& sql = statement_sql()[id];
            sqlite3_stmt* raw = nullptr;
            int rc = sqlite3_prepare_v3(db.get(), sql.c_str(), static_cast<int>(sql.size() + 1),
                                        SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
            if (rc != SQLITE_OK) {
                sqlite3_finalize(raw);
                return error(rc, "preparing a statement");
            }
            slot.reset(raw);
        }
        return StmtUse(slot.get());
    }

    // Runs a statement with no result rows.
    template <class... Args>
    Result<void> run(StmtId id, std::string_view what, const Args&... args) {
        auto st = use(id);
        if (!st) return st.error();
        int rc = bind_all(st->get(), args...);
        if (rc == SQLITE_OK) rc = sqlite3_step(st->get());
        if (rc != SQLITE_DONE) return error(rc, what);
        return {};
    }

    Result<void> exec(const char* sql, std::string_view what) {
        int rc = sqlite3_exec(db.get(), sql, nullptr, nullptr, nullptr);
        if (rc != SQLITE_OK) return error(rc, what);
        return {};
    }

    Result<std::int64_t> pragma_int(const char* sql, std::string_view what) {
        sqlite3_stmt* raw = nullptr;
        int rc = sqlite3_prepare_v2(db.get(), sql, -1, &raw, nullptr);
        StmtPtr s(raw);
        if (rc == SQLITE_OK) rc = sqlite3_step(s.get());
        if (rc != SQLITE_ROW) return error(rc, what);
        return static_cast<std::int64_t>(sqlite3_column_int64(s.get(), 0));
    }

    Error bad_row(std::string_view what) const {
        return make_error(store_errc::corrupt, "store " + file.string() + ": malformed " + std::string(what) +
                                                   " row (the database was changed outside juice?)");
    }

    Result<ContactRecord> read_contact(sqlite3_stmt* s) const {
        ContactRecord c;
        auto id = UserId::from_bytes(column_blob(s, 0));
        auto state = sqlite3_column_int64(s, 2);
        if (!id || state < 0 || state > static_cast<int>(ContactState::blocked)) return bad_row("contact");
        c.id = *id;
        c.name = column_text(s, 1);
        c.state = static_cast<ContactState>(state);
        c.added = sqlite3_column_int64(s, 3);
        c.last_seen = sqlite3_column_int64(s, 4);
        auto key = column_blob(s, 5);
        c.pubkey.assign(key.begin(), key.end());
        c.request = column_text(s, 6);
        c.request_ts = sqlite3_column_int64(s, 7);
        return c;
    }

    Result<MessageRecord> read_message(sqlite3_stmt* s) const {
        MessageRecord m;
        m.seq = sqlite3_column_int64(s, 0);
        auto id = MessageId::from_bytes(column_blob(s, 1));
        auto from = UserId::from_bytes(column_blob(s, 2));
        auto to = UserId::from_bytes(column_blob(s, 3));
        auto state = sqlite3_column_int64(s, 6);
        if (!id || !from || !to || state < 0 || state > static_cast<int>(MessageState::read))
            return bad_row("message");
        m.id = *id;
        m.from = *from;
        m.to = *to;
        m.text = column_text(s, 4);
        m.ts = sqlite3_column_int64(s, 5);
        m.state = static_cast<MessageState>(state);
        m.outgoing = sqlite3_column_int64(s, 7) != 0;
        m.inbox = static_cast<std::uint64_t>(sqlite3_column_int64(s, 8));
        return m;
    }

    template <class Record, class Reader>
    Result<std::vector<Record>> collect(sqlite3_stmt* s, Reader read, std::string_view what) {
        std::vector<Record> out;
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            auto r = (this->*read)(s);
            if (!r) return r.error();
            out.push_back(std::move(*r));
        }
        if (rc != SQLITE_DONE) return error(rc, what);
        return out;
    }

    // One int64 column of the first row, or nullopt for no row.
    template <class... Args>
    Result<std::optional<std::int64_t>> scalar(StmtId id, std::string_view what, const Args&... args) {
        auto st = use(id);
        if (!st) return st.error();
        int rc = bind_all(st->get(), args...);
        if (rc == SQLITE_OK) rc = sqlite3_step(st->get());
        if (rc == SQLITE_DONE) return std::optional<std::int64_t>();
        if (rc != SQLITE_ROW) return error(rc, what);
        return std::optional<std::int64_t>(sqlite3_column_int64(st->get(), 0));
    }

    Result<std::optional<std::int64_t>> ts_of(std::int64_t seq) {
        return scalar(seq_ts_stmt, "reading a message's time", seq);
    }

    Result<void> migrate();
};

// Brings the schema to k_schema_version in one transaction. Re-reads the
// version under the write lock in case another process migrated meanwhile.
Result<void> Store::Impl::migrate() {
    if (auto r = exec("BEGIN IMMEDIATE", "starting the schema migration"); !r) return r;
    auto fail = [&](Error e) -> Result<void> {
        sqlite3_exec(db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
        return e;
    };
    auto version = pragma_int("PRAGMA user_version", "reading the schema version");
    if (!version) return fail(version.error());
    if (*version == k_schema_version) return exec("COMMIT", "finishing the schema check");
    // user_version is a signed 32-bit header field: a damaged file can hold a
    // negative one, which must not index k_migrations (found by fuzz_store).
    if (*version < 0)
        return fail(make_error(store_errc::corrupt,
                               "store " + file.string() + " has an invalid schema version " +
                                   std::to_string(*version) +
                                   ": the file is damaged (restore a backup or move the file away)"));
    if (*version > k_schema_version)
        return fail(
            make_error(store_errc::too_new, "store " + file.string() + " has schema version " +
                                                std::to_string(*version) + "; this juice supports up to " +
                                                std::to_string(k_schema_version) + ": upgrade juice"));
    for (auto v = *version; v < k_schema_version; ++v)
        if (auto r = exec(k_migrations[v], "migrating the schema to version " + std::to_string(v + 1)); !r)
            return fail(r.error());
    auto set = "PRAGMA user_version = " + std::to_string(k_schema_version) +
               "; PRAGMA application_id = " + std::to_string(k_application_id) + ";";
    if (auto r = exec(set.c_str(), "recording the schema version"); !r) return fail(r.error());
    if (auto r = exec("COMMIT", "committing the schema migration"); !r) return fail(r.error());
    return {};
}

Store::Store(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}
Store::~Store() = default;

Result<std::unique_ptr<Store>> Store::open(const std::filesystem::path& file, Sync sync) {
    auto impl = std::make_unique<Impl>();
    impl->file = file;
    const std::string name = file.string();
    auto fail = [&](store_errc e, const std::string& why) {
        return make_error(e, "store " + name + ": " + why);
    };

    std::string why;
    if (!make_dirs(file.parent_path(), why)) return fail(store_errc::open_failed, why);

    // Create the file ourselves so it is 0600 from the start; SQLite gives the
    // -wal and -shm files the database file's mode.
    int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        ::fchmod(fd, 0600);  // a umask such as 0277 would leave it unwritable
        ::close(fd);
    } else if (errno != EEXIST) {
        return fail(store_errc::open_failed, std::string("cannot create the file: ") + std::strerror(errno));
    } else {
        std::error_code ec;
        auto size = std::filesystem::file_size(file, ec);
        if (ec) return fail(store_errc::open_failed, "cannot read the file: " + ec.message());
        if (size > 0 && !header_is_sqlite(file, size))
            return fail(store_errc::corrupt,
                        "the file is not a SQLite database; juice has left it untouched: move it away or "
                        "restore a backup");
        struct stat st {};
        if (::stat(file.c_str(), &st) == 0 && (st.st_mode & 077) != 0 && ::chmod(file.c_str(), 0600) != 0)
            return fail(store_errc::open_failed,
                        std::string("cannot restrict the file to mode 0600: ") + std::strerror(errno));
    }

    sqlite3* raw = nullptr;
    int rc = sqlite3_open_v2(file.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
    impl->db.reset(raw);
    if (rc != SQLITE_OK) return impl->error(rc, "opening", store_errc::open_failed);
    sqlite3_extended_result_codes(impl->db.get(), 1);
    sqlite3_busy_timeout(impl->db.get(), k_busy_timeout_ms);

    // Identify the file before anything writes to it.
    auto app_id = impl->pragma_int("PRAGMA application_id", "identifying the file");
    if (!app_id) return app_id.error();
    auto version = impl->pragma_int("PRAGMA user_version", "reading the schema version");
    if (!version) return version.error();
    auto tables = impl->pragma_int("SELECT count(*) FROM sqlite_master", "reading the schema");
    if (!tables) return tables.error();
    bool fresh = *app_id == 0 && *version == 0 && *tables == 0;
    if (!fresh && *app_id != k_application_id)
        return fail(store_errc::corrupt, "the file is a SQLite database of another program (application_id " +
                                             std::to_string(*app_id) + "), not juice's: use another path");
    if (*version > k_schema_version)
        return fail(store_errc::too_new, "schema version " + std::to_string(*version) +
                                             " was written by a newer juice (this one supports up to " +
                                             std::to_string(k_schema_version) + "): upgrade juice");

    // journal_mode answers with the mode in effect; anything but "wal" means
    // the file system cannot do WAL (e.g. some network file systems).
    {
        sqlite3_stmt* s = nullptr;
        rc = sqlite3_prepare_v2(impl->db.get(), "PRAGMA journal_mode = WAL", -1, &s, nullptr);
        StmtPtr jm(s);
        if (rc == SQLITE_OK) rc = sqlite3_step(jm.get());
        if (rc != SQLITE_ROW) return impl->error(rc, "enabling WAL", store_errc::open_failed);
        auto mode = column_text(jm.get(), 0);
        if (mode != "wal")
            return fail(store_errc::open_failed,
                        "cannot use write-ahead logging on this file system (journal "
                        "mode stays '" +
                            mode + "'): use a local disk");
    }
    const char* pragmas = sync == Sync::full ? "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
                                             : "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;";
    if (auto r = impl->exec(pragmas, "configuring the connection"); !r) return r.error();
    if (auto r = impl->migrate(); !r) return r.error();

    // The -wal/-shm files inherit the database's mode, but older ones left by
    // a previous run under a looser mode are tightened here.
    for (const char* suffix : {"-wal", "-shm"}) {
        auto side = name + suffix;
        struct stat st {};
        if (::stat(side.c_str(), &st) == 0 && (st.st_mode & 077) != 0) ::chmod(side.c_str(), 0600);
    }
    return std::unique_ptr<Store>(new Store(std::move(impl)));
}

// ---- contacts ----

Result<void> Store::put_contact(const ContactRecord& c) {
    return m_impl->run(put_contact_stmt, "saving a contact", std::span<const std::uint8_t>(c.id.bytes),
                       std::string_view(c.name), static_cast<std::int64_t>(c.state), c.added, c.last_seen,
                       std::span<const std::uint8_t>(c.pubkey), std::string_view(c.request), c.request_ts);
}

Result<std::optional<ContactRecord>> Store::get_contact(const UserId& id) {
    auto st = m_impl->use(get_contact_stmt);
    if (!st) return st.error();
    int rc = bind_all(st->get(), std::span<const std::uint8_t>(id.bytes));
    if (rc == SQLITE_OK) rc = sqlite3_step(st->get());
    if (rc == SQLITE_DONE) return std::optional<ContactRecord>();
    if (rc != SQLITE_ROW) return m_impl->error(rc, "reading a contact");
    auto c = m_impl->read_contact(st->get());
    if (!c) return c.error();
    return std::optional<ContactRecord>(std::move(*c));
}

Result<std::vector<ContactRecord>> Store::list_contacts() {
    auto st = m_impl->use(list_contacts_stmt);
    if (!st) return st.error();
    return m_impl->collect<ContactRecord>(st->get(), &Impl::read_contact, "listing contacts");
}

Result<void> Store::remove_contact(const UserId& id) {
    return m_impl->run(remove_contact_stmt, "removing a contact", std::span<const std::uint8_t>(id.bytes));
}

Result<void> Store::set_last_seen(const UserId& id, std::int64_t ts) {
    return m_impl->run(set_last_seen_stmt, "updating a contact's last seen time",
                       std::span<const std::uint8_t>(id.bytes), ts);
}

// ---- messages ----

Result<bool> Store::add_message(MessageRecord& m) {
    auto st = m_impl->use(add_message_stmt);
    if (!st) return st.error();
    const UserId& peer = m.outgoing ? m.to : m.from;
    int rc = bind_all(st->get(), std::span<const std::uint8_t>(m.id.bytes),
                      std::span<const std::uint8_t>(m.from.bytes), std::span<const std::uint8_t>(m.to.bytes),
                      std::span<const std::uint8_t>(peer.bytes), std::string_view(m.text), m.ts,
                      static_cast<std::int64_t>(m.state), static_cast<std::int64_t>(m.outgoing ? 1 : 0));
    if (rc == SQLITE_OK) rc = sqlite3_step(st->get());
    if (rc != SQLITE_DONE) return m_impl->error(rc, "saving a message");
    if (sqlite3_changes(m_impl->db.get()) == 0) return false;
    m.seq = sqlite3_last_insert_rowid(m_impl->db.get());
    return true;
}

Result<bool> Store::advance_message(const MessageId& id, MessageState state) {
    if (auto r = m_impl->run(advance_message_stmt, "updating a message's state",
                             std::span<const std::uint8_t>(id.bytes), static_cast<std::int64_t>(state));
        !r)
        return r.error();
    return sqlite3_changes(m_impl->db.get()) > 0;
}

Result<std::optional<MessageRecord>> Store::get_message(const MessageId& id) {
    auto st = m_impl->use(get_message_stmt);
    if (!st) return st.error();
    int rc = bind_all(st->get(), std::span<const std::uint8_t>(id.bytes));
    if (rc == SQLITE_OK) rc = sqlite3_step(st->get());
    if (rc == SQLITE_DONE) return std::optional<MessageRecord>();
    if (rc != SQLITE_ROW) return m_impl->error(rc, "reading a message");
    auto m = m_impl->read_message(st->get());
    if (!m) return m.error();
    return std::optional<MessageRecord>(std::move(*m));
}

Result<std::vector<MessageRecord>> Store::undelivered_to(const UserId& to) {
    auto st = m_impl->use(undelivered_stmt);
    if (!st) return st.error();
    if (int rc = bind_all(st->get(), std::span<const std::uint8_t>(to.bytes)); rc != SQLITE_OK)
        return m_impl->error(rc, "reading the outbox");
    return m_impl->collect<MessageRecord>(st->get(), &Impl::read_message, "reading the outbox");
}

Result<std::vector<MessageRecord>> Store::history(const UserId& peer, std::size_t limit,
                                                  std::optional<std::int64_t> before_seq) {
    limit = std::min(limit, k_history_cap);
    if (limit == 0) return std::vector<MessageRecord>();
    constexpr auto k_max = std::numeric_limits<std::int64_t>::max();
    std::int64_t before_ts = k_max;
    if (before_seq) {
        auto ts = m_impl->ts_of(*before_seq);
        if (!ts) return ts.error();
        before_ts = ts->value_or(k_max);
    }
    auto st = m_impl->use(history_stmt);
    if (!st) return st.error();
    int rc = bind_all(st->get(), std::span<const std::uint8_t>(peer.bytes), before_ts,
                      before_seq.value_or(k_max), static_cast<std::int64_t>(limit));
    if (rc != SQLITE_OK) return m_impl->error(rc, "reading history");
    auto out = m_impl->collect<MessageRecord>(st->get(), &Impl::read_message, "reading history");
    if (out) std::reverse(out->begin(), out->end());  // selected newest first
    return out;
}

Result<std::vector<MessageId>> Store::mark_read_until(const UserId& peer, std::int64_t seq) {
    auto ts = m_impl->ts_of(seq);
    if (!ts) return ts.error();
    if (!ts->has_value()) return std::vector<MessageId>();
    auto st = m_impl->use(mark_read_stmt);
    if (!st) return st.error();
    int rc = bind_all(st->get(), std::span<const std::uint8_t>(peer.bytes), **ts, seq);
    if (rc != SQLITE_OK) return m_impl->error(rc, "marking messages read");
    // RETURNING yields rows in no particular order; report them by seq.
    std::vector<std::pair<std::int64_t, MessageId>> rows;
    while ((rc = sqlite3_step(st->get())) == SQLITE_ROW) {
        auto id = MessageId::from_bytes(column_blob(st->get(), 1));
        if (!id) return m_impl->bad_row("message");
        rows.emplace_back(sqlite3_column_int64(st->get(), 0), *id);
    }
    if (rc != SQLITE_DONE) return m_impl->error(rc, "marking messages read");
    std::sort(rows.begin(), rows.end());
    std::vector<MessageId> out;
    out.reserve(rows.size());
    for (auto& r : rows) out.push_back(r.second);
    return out;
}

Result<std::int64_t> Store::max_outgoing_ts() {
    auto v = m_impl->scalar(max_outgoing_ts_stmt, "reading the newest message time");
    if (!v) return v.error();
    return v->value_or(0);
}

Result<void> Store::set_message_inbox(const MessageId& id, std::uint64_t bundle) {
    return m_impl->run(set_inbox_stmt, "recording a message's inbox copy",
                       std::span<const std::uint8_t>(id.bytes), static_cast<std::int64_t>(bundle));
}

Result<std::size_t> Store::bundle_pending(std::uint64_t bundle) {
    auto v = m_impl->scalar(bundle_pending_stmt, "counting undelivered messages of an inbox bundle",
                            static_cast<std::int64_t>(bundle));
    if (!v) return v.error();
    return static_cast<std::size_t>(v->value_or(0));
}

Result<std::vector<MessageId>> Store::mark_bundle_sent(std::uint64_t bundle) {
    auto st = m_impl->use(bundle_sent_stmt);
    if (!st) return st.error();
    int rc = bind_all(st->get(), static_cast<std::int64_t>(bundle));
    if (rc != SQLITE_OK) return m_impl->error(rc, "marking an inbox bundle sent");
    std::vector<MessageId> out;
    while ((rc = sqlite3_step(st->get())) == SQLITE_ROW) {
        auto id = MessageId::from_bytes(column_blob(st->get(), 0));
        if (!id) return m_impl->bad_row("message");
        out.push_back(*id);
    }
    if (rc != SQLITE_DONE) return m_impl->error(rc, "marking an inbox bundle sent");
    return out;
}

// ---- inbox values we keep putting ----

Result<void> Store::add_inbox_value(const InboxValueRecord& v) {
    return m_impl->run(add_inbox_value_stmt, "saving an inbox value", static_cast<std::int64_t>(v.value_id),
                       std::span<const std::uint8_t>(v.peer.bytes), static_cast<std::int64_t>(v.bundle),
                       static_cast<std::int64_t>(v.kind), v.created, std::span<const std::uint8_t>(v.data));
}

Result<std::vector<InboxValueRecord>> Store::inbox_values() {
    auto st = m_impl->use(list_inbox_values_stmt);
    if (!st) return st.error();
    std::vector<InboxValueRecord> out;
    int rc;
    while ((rc = sqlite3_step(st->get())) == SQLITE_ROW) {
        InboxValueRecord v;
        auto peer = UserId::from_bytes(column_blob(st->get(), 1));
        auto kind = sqlite3_column_int64(st->get(), 3);
        if (!peer || kind < 0 || kind > static_cast<int>(InboxKind::receipts))
            return m_impl->bad_row("inbox");
        v.value_id = static_cast<std::uint64_t>(sqlite3_column_int64(st->get(), 0));
        v.peer = *peer;
        v.bundle = static_cast<std::uint64_t>(sqlite3_column_int64(st->get(), 2));
        v.kind = static_cast<InboxKind>(kind);
        v.created = sqlite3_column_int64(st->get(), 4);
        auto data = column_blob(st->get(), 5);
        v.data.assign(data.begin(), data.end());
        out.push_back(std::move(v));
    }
    if (rc != SQLITE_DONE) return m_impl->error(rc, "reading inbox values");
    return out;
}

Result<void> Store::remove_inbox_bundle(std::uint64_t bundle) {
    return m_impl->run(delete_bundle_stmt, "removing an inbox bundle", static_cast<std::int64_t>(bundle));
}

Result<void> Store::remove_inbox_kind(const UserId& peer, InboxKind kind) {
    return m_impl->run(delete_inbox_kind_stmt, "removing inbox values",
                       std::span<const std::uint8_t>(peer.bytes), static_cast<std::int64_t>(kind));
}

// ---- declined contact requests ----

Result<std::optional<std::int64_t>> Store::declined_until(const UserId& id) {
    return m_impl->scalar(get_declined_stmt, "reading a declined request",
                          std::span<const std::uint8_t>(id.bytes));
}

Result<void> Store::set_declined(const UserId& id, std::int64_t request_ts) {
    return m_impl->run(set_declined_stmt, "recording a declined request",
                       std::span<const std::uint8_t>(id.bytes), request_ts);
}

// ---- settings ----

Result<std::optional<std::string>> Store::get_setting(std::string_view key) {
    auto st = m_impl->use(get_setting_stmt);
    if (!st) return st.error();
    int rc = bind_all(st->get(), key);
    if (rc == SQLITE_OK) rc = sqlite3_step(st->get());
    if (rc == SQLITE_DONE) return std::optional<std::string>();
    if (rc != SQLITE_ROW) return m_impl->error(rc, "reading a setting");
    return std::optional<std::string>(column_text(st->get(), 0));
}

Result<void> Store::set_setting(std::string_view key, std::string_view value) {
    return m_impl->run(set_setting_stmt, "saving a setting", key, value);
}

// ---- transactions ----

Store::Transaction::Transaction(Store& s) : m_store(&s) {
    auto& impl = *s.m_impl;
    if (impl.in_transaction) {
        impl.failed_tx = this;
        impl.failed_tx_error = "store " + impl.file.string() + ": nested transactions are not supported";
        m_done = true;
        return;
    }
    if (auto r = impl.run(begin_stmt, "starting a transaction"); !r) {
        impl.failed_tx = this;
        impl.failed_tx_error = r.error().message;
        m_done = true;
        return;
    }
    impl.in_transaction = true;
}

Store::Transaction::~Transaction() {
    auto& impl = *m_store->m_impl;
    if (impl.failed_tx == this) impl.failed_tx = nullptr;
    if (m_done) return;
    // SQLite may already have rolled back on its own (e.g. after SQLITE_FULL).
    if (!sqlite3_get_autocommit(impl.db.get())) (void)impl.run(rollback_stmt, "rolling back a transaction");
    impl.in_transaction = false;
}

Result<void> Store::Transaction::commit() {
    auto& impl = *m_store->m_impl;
    if (m_done) {
        if (impl.failed_tx == this) return make_error(store_errc::io_error, impl.failed_tx_error);
        return make_error(store_errc::io_error,
                          "store " + impl.file.string() + ": transaction already ended");
    }
    auto r = impl.run(commit_stmt, "committing a transaction");
    // A failed COMMIT may leave the transaction open; the destructor then
    // rolls it back.
    if (r || sqlite3_get_autocommit(impl.db.get())) {
        m_done = true;
        impl.in_transaction = false;
    }
    return r;
}

}  // namespace juice::node
