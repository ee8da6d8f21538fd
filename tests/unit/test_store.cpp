#include "juice/node/store.hpp"

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

using namespace juice;
using namespace juice::node;
namespace fs = std::filesystem;

namespace {

// A fresh directory for one test, removed with everything in it afterwards.
class TempDir {
public:
    TempDir() {
        const char* base = std::getenv("TMPDIR");
        std::string tmpl = std::string(base && *base ? base : "/tmp") + "/juice-store-XXXXXX";
        if (!::mkdtemp(tmpl.data())) FAIL("mkdtemp failed");
        m_path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(m_path, ec);
    }
    const fs::path& path() const { return m_path; }

private:
    fs::path m_path;
};

template <class T>
T must(Result<T> r) {
    if (!r) FAIL(r.error().what());
    return std::move(*r);
}
void must(Result<void> r) {
    if (!r) FAIL(r.error().what());
}

std::unique_ptr<Store> open_store(const fs::path& file, Store::Sync sync = Store::Sync::full) {
    return must(Store::open(file, sync));
}

std::string read_all(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
}

void write_all(const fs::path& file, const std::string& bytes) {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out << bytes;
}

// Overwrites a big-endian 32-bit field of the (closed) database header.
void patch_header_u32(const fs::path& file, std::size_t offset, std::uint32_t v) {
    auto bytes = read_all(file);
    REQUIRE(bytes.size() >= 100);
    for (int i = 0; i < 4; ++i) bytes[offset + i] = static_cast<char>((v >> (24 - 8 * i)) & 0xff);
    write_all(file, bytes);
}

unsigned file_mode(const fs::path& file) {
    struct stat st {};
    REQUIRE(::stat(file.c_str(), &st) == 0);
    return st.st_mode & 0777;
}

MessageRecord message(const UserId& from, const UserId& to, bool outgoing, std::string text,
                      std::int64_t ts = 1000, MessageState state = MessageState::queued) {
    MessageRecord m;
    m.id = MessageId::random();
    m.from = from;
    m.to = to;
    m.outgoing = outgoing;
    m.text = std::move(text);
    m.ts = ts;
    m.state = state;
    return m;
}

std::vector<std::string> texts(const std::vector<MessageRecord>& ms) {
    std::vector<std::string> out;
    for (auto& m : ms) out.push_back(m.text);
    return out;
}

struct People {
    UserId me = UserId::random();
    UserId alice = UserId::random();
    UserId bob = UserId::random();
};

}  // namespace

UserId user_id(std::uint8_t first) {
    UserId id = UserId::random();
    id.bytes[0] = first;
    return id;
}

TEST_CASE("store: contacts insert, replace, list order, remove, survive reopen") {
    TempDir dir;
    auto file = dir.path() / "juice.db";
    // Ids chosen so that id order, name order and insertion order all differ.
    ContactRecord alice1{user_id(3), "alice", ContactState::pending_out, 100, 0, {}, "hi", 90};
    ContactRecord alice2{user_id(1), "alice", ContactState::pending_in, 300, 0, {}, "", 0};  // same name
    ContactRecord bob{user_id(2), "Bob", ContactState::mutual, 200, 250, {0x30, 0x82, 0x00}, "", 7};
    ContactRecord zed{user_id(0), "zed", ContactState::blocked, 400, 0, {}, "", 0};
    auto store = open_store(file);

    CHECK_FALSE(must(store->get_contact(alice1.id)).has_value());
    for (auto* c : {&alice1, &zed, &bob, &alice2}) must(store->put_contact(*c));
    CHECK(must(store->get_contact(bob.id)) == bob);

    zed.state = ContactState::mutual;
    zed.name = "Zed Z.";
    must(store->put_contact(zed));  // replace, not a second row
    CHECK(must(store->get_contact(zed.id)) == zed);

    must(store->set_last_seen(bob.id, 999));
    bob.last_seen = 999;
    must(store->set_last_seen(UserId::random(), 5));  // unknown contact: no-op

    // Ordered by name (bytewise: upper case first), then id for equal names.
    std::vector<ContactRecord> expected{bob, zed, alice2, alice1};
    CHECK(must(store->list_contacts()) == expected);

    store.reset();
    store = open_store(file);
    CHECK(must(store->list_contacts()) == expected);

    must(store->remove_contact(bob.id));
    must(store->remove_contact(bob.id));  // removing twice is fine
    CHECK_FALSE(must(store->get_contact(bob.id)).has_value());
    CHECK(must(store->list_contacts()) == std::vector<ContactRecord>{zed, alice2, alice1});
}

TEST_CASE("store: removing a contact keeps its message history") {
    TempDir dir;
    People p;
    auto store = open_store(dir.path() / "juice.db");
    must(store->put_contact({p.alice, "alice", ContactState::mutual, 1, 0, {}, "", 0}));
    auto m = message(p.alice, p.me, false, "hi");
    CHECK(must(store->add_message(m)));
    must(store->remove_contact(p.alice));
    CHECK(texts(must(store->history(p.alice, 10))) == std::vector<std::string>{"hi"});
}

TEST_CASE("store: add_message assigns seq and ignores a duplicate id") {
    TempDir dir;
    auto file = dir.path() / "juice.db";
    People p;
    auto store = open_store(file);

    auto a = message(p.me, p.alice, true, "first", 10);
    auto b = message(p.alice, p.me, false, "second", 20, MessageState::delivered);
    CHECK(must(store->add_message(a)));
    CHECK(must(store->add_message(b)));
    CHECK(a.seq > 0);
    CHECK(b.seq > a.seq);
    CHECK(must(store->get_message(a.id)) == a);
    CHECK(must(store->get_message(b.id)) == b);

    auto dup = a;
    dup.text = "changed";
    dup.state = MessageState::read;
    dup.seq = 0;
    CHECK_FALSE(must(store->add_message(dup)));
    CHECK(dup.seq == 0);
    CHECK(must(store->get_message(a.id)) == a);  // stored row unchanged
    CHECK_FALSE(must(store->get_message(MessageId::random())).has_value());

    store.reset();
    store = open_store(file);
    CHECK(must(store->get_message(b.id)) == b);
    auto c = message(p.me, p.bob, true, "third");
    CHECK(must(store->add_message(c)));
    CHECK(c.seq > b.seq);
}

TEST_CASE("store: advance_message only moves state forward") {
    TempDir dir;
    People p;
    auto store = open_store(dir.path() / "juice.db");
    auto m = message(p.me, p.alice, true, "x");
    REQUIRE(must(store->add_message(m)));

    CHECK(must(store->advance_message(m.id, MessageState::sent)));
    CHECK_FALSE(must(store->advance_message(m.id, MessageState::sent)));  // same state: no change
    CHECK(must(store->advance_message(m.id, MessageState::read)));        // may skip states
    CHECK_FALSE(must(store->advance_message(m.id, MessageState::delivered)));
    CHECK_FALSE(must(store->advance_message(m.id, MessageState::queued)));
    CHECK(must(store->get_message(m.id))->state == MessageState::read);
    CHECK_FALSE(must(store->advance_message(MessageId::random(), MessageState::read)));
}

TEST_CASE("store: undelivered_to lists queued and sent outgoing messages, oldest first") {
    TempDir dir;
    People p;
    auto store = open_store(dir.path() / "juice.db");
    auto q1 = message(p.me, p.alice, true, "q1");
    auto in = message(p.alice, p.me, false, "incoming");  // incoming: never in the outbox
    auto s2 = message(p.me, p.alice, true, "s2", 1000, MessageState::sent);
    auto other = message(p.me, p.bob, true, "to bob");
    auto d3 = message(p.me, p.alice, true, "d3");
    auto q4 = message(p.me, p.alice, true, "q4");
    for (auto* m : {&q1, &in, &s2, &other, &d3, &q4}) REQUIRE(must(store->add_message(*m)));
    REQUIRE(must(store->advance_message(d3.id, MessageState::delivered)));

    auto out = must(store->undelivered_to(p.alice));
    CHECK(texts(out) == std::vector<std::string>{"q1", "s2", "q4"});
    CHECK(out.at(0) == q1);
    CHECK(texts(must(store->undelivered_to(p.bob))) == std::vector<std::string>{"to bob"});
    CHECK(must(store->undelivered_to(p.me)).empty());

    REQUIRE(must(store->advance_message(q1.id, MessageState::sent)));  // sent is still undelivered
    CHECK(texts(must(store->undelivered_to(p.alice))) == std::vector<std::string>{"q1", "s2", "q4"});
    REQUIRE(must(store->advance_message(q1.id, MessageState::read)));
    CHECK(texts(must(store->undelivered_to(p.alice))) == std::vector<std::string>{"s2", "q4"});
}

TEST_CASE("store: history pages a conversation newest-last, both directions, other peers excluded") {
    TempDir dir;
    People p;
    auto store = open_store(dir.path() / "juice.db");
    std::vector<MessageRecord> conv;
    for (int i = 0; i < 10; ++i) {
        auto m = i % 2 ? message(p.alice, p.me, false, "a" + std::to_string(i))
                       : message(p.me, p.alice, true, "a" + std::to_string(i));
        REQUIRE(must(store->add_message(m)));
        conv.push_back(m);
        auto noise = i % 2 ? message(p.bob, p.me, false, "b") : message(p.me, p.bob, true, "b");
        REQUIRE(must(store->add_message(noise)));
    }

    auto all = must(store->history(p.alice, 100));
    CHECK(all == conv);

    auto newest3 = must(store->history(p.alice, 3));
    CHECK(texts(newest3) == std::vector<std::string>{"a7", "a8", "a9"});
    auto page2 = must(store->history(p.alice, 3, newest3.front().seq));
    CHECK(texts(page2) == std::vector<std::string>{"a4", "a5", "a6"});
    auto page3 = must(store->history(p.alice, 5, page2.front().seq));
    CHECK(texts(page3) == std::vector<std::string>{"a0", "a1", "a2", "a3"});
    CHECK(must(store->history(p.alice, 5, page3.front().seq)).empty());

    CHECK(must(store->history(p.alice, 0)).empty());
    CHECK(must(store->history(p.bob, 100)).size() == 10);
    CHECK(must(store->history(UserId::random(), 100)).empty());
}

TEST_CASE("store: history returns at most 1000 messages") {
    TempDir dir;
    People p;
    auto store = open_store(dir.path() / "juice.db");
    {
        Store::Transaction tx(*store);
        for (int i = 0; i < 1005; ++i) {
            auto m = message(p.alice, p.me, false, std::to_string(i));
            REQUIRE(must(store->add_message(m)));
        }
        must(tx.commit());
    }
    auto h = must(store->history(p.alice, 5000));
    REQUIRE(h.size() == 1000);
    CHECK(h.front().text == "5");
    CHECK(h.back().text == "1004");
}

TEST_CASE("store: mark_read_until marks incoming messages up to seq") {
    TempDir dir;
    People p;
    auto store = open_store(dir.path() / "juice.db");
    auto i1 = message(p.alice, p.me, false, "i1", 1, MessageState::delivered);
    auto o2 = message(p.me, p.alice, true, "o2", 2, MessageState::delivered);
    auto i3 = message(p.alice, p.me, false, "i3", 3, MessageState::delivered);
    auto b4 = message(p.bob, p.me, false, "b4", 4, MessageState::delivered);
    auto i5 = message(p.alice, p.me, false, "i5", 5, MessageState::delivered);
    for (auto* m : {&i1, &o2, &i3, &b4, &i5}) REQUIRE(must(store->add_message(*m)));

    auto changed = must(store->mark_read_until(p.alice, i3.seq));
    CHECK(changed == std::vector<MessageId>{i1.id, i3.id});
    CHECK(must(store->get_message(i1.id))->state == MessageState::read);
    CHECK(must(store->get_message(i3.id))->state == MessageState::read);
    CHECK(must(store->get_message(o2.id))->state == MessageState::delivered);  // outgoing untouched
    CHECK(must(store->get_message(b4.id))->state == MessageState::delivered);  // other peer untouched
    CHECK(must(store->get_message(i5.id))->state == MessageState::delivered);  // after seq

    CHECK(must(store->mark_read_until(p.alice, i3.seq)).empty());  // already read
    CHECK(must(store->mark_read_until(p.alice, i5.seq)) == std::vector<MessageId>{i5.id});
}

TEST_CASE("store: settings get, set, overwrite, survive reopen") {
    TempDir dir;
    auto file = dir.path() / "juice.db";
    auto store = open_store(file);
    CHECK_FALSE(must(store->get_setting("nick")).has_value());
    must(store->set_setting("nick", "zoe"));
    must(store->set_setting("port", "4222"));
    must(store->set_setting("nick", "Zoë"));
    must(store->set_setting("empty", std::string_view()));
    store.reset();
    store = open_store(file);
    CHECK(must(store->get_setting("nick")) == std::optional<std::string>("Zoë"));
    CHECK(must(store->get_setting("port")) == std::optional<std::string>("4222"));
    CHECK(must(store->get_setting("empty")) == std::optional<std::string>(""));
    CHECK_FALSE(must(store->get_setting("Nick")).has_value());
}

TEST_CASE("store: Transaction commits, rolls back, refuses nesting") {
    TempDir dir;
    auto file = dir.path() / "juice.db";
    People p;
    auto store = open_store(file);
    auto kept1 = message(p.me, p.alice, true, "kept1");
    auto kept2 = message(p.me, p.alice, true, "kept2");
    auto lost = message(p.me, p.alice, true, "lost");

    {
        Store::Transaction tx(*store);
        REQUIRE(must(store->add_message(kept1)));
        must(store->set_setting("k", "v"));
        {
            Store::Transaction inner(*store);
            auto r = inner.commit();
            CHECK_FALSE(r);
            if (!r) CHECK(r.error().code == store_errc::io_error);
        }
        REQUIRE(must(store->add_message(kept2)));
        must(tx.commit());
        CHECK_FALSE(tx.commit());  // a second commit is an error, not a crash
    }
    {
        Store::Transaction tx(*store);
        REQUIRE(must(store->add_message(lost)));
        REQUIRE(must(store->advance_message(kept1.id, MessageState::sent)));
        must(store->set_setting("k", "changed"));
        CHECK(must(store->get_message(lost.id)).has_value());  // visible inside the transaction
    }                                                          // no commit: rolled back
    CHECK_FALSE(must(store->get_message(lost.id)).has_value());
    CHECK(must(store->get_message(kept1.id))->state == MessageState::queued);

    store.reset();
    store = open_store(file);
    CHECK(texts(must(store->history(p.alice, 10))) == std::vector<std::string>{"kept1", "kept2"});
    CHECK(must(store->get_setting("k")) == std::optional<std::string>("v"));

    // After a rollback the store is usable for new transactions.
    Store::Transaction tx(*store);
    REQUIRE(must(store->add_message(lost)));
    must(tx.commit());
    CHECK(must(store->get_message(lost.id)).has_value());
}

TEST_CASE("store: database, -wal and -shm files are mode 0600; parent directory created") {
    TempDir dir;
    auto file = dir.path() / "a" / "b" / "juice.db";
    People p;
    auto old_mask = ::umask(0);  // so the store itself must restrict the mode
    auto store = Store::open(file);
    ::umask(old_mask);
    REQUIRE(store);
    auto m = message(p.me, p.alice, true, "secret");
    REQUIRE(must((*store)->add_message(m)));  // makes sure -wal and -shm exist
    CHECK(file_mode(file) == 0600);
    CHECK(file_mode(fs::path(file.string() + "-wal")) == 0600);
    CHECK(file_mode(fs::path(file.string() + "-shm")) == 0600);
    CHECK((file_mode(dir.path() / "a") & 077) == 0);
    store->reset();

    // An existing database with a looser mode is tightened on open.
    REQUIRE(::chmod(file.c_str(), 0644) == 0);
    auto again = open_store(file);
    CHECK(file_mode(file) == 0600);
}

TEST_CASE("store: a file that is not SQLite is refused as corrupt and left unchanged") {
    TempDir dir;
    auto file = dir.path() / "juice.db";
    std::string big(8192, '\0');
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 7919 + 13) % 251);
    std::string sqlite_header_only = std::string("SQLite format 3") + '\0' + std::string(84, 'x');
    auto content = GENERATE_COPY(std::string("hello world\n"), big, sqlite_header_only);
    write_all(file, content);
    REQUIRE(::chmod(file.c_str(), 0644) == 0);

    auto r = Store::open(file);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == store_errc::corrupt);
    CHECK_THAT(r.error().message, Catch::Contains(file.string()));
    CHECK(read_all(file) == content);
    CHECK(file_mode(file) == 0644);
    CHECK_FALSE(fs::exists(file.string() + "-wal"));
}

TEST_CASE("store: a damaged database is reported as corrupt") {
    TempDir dir;
    auto file = dir.path() / "juice.db";
    open_store(file).reset();
    auto bytes = read_all(file);
    REQUIRE(bytes.size() >= 4096);
    for (std::size_t i = 100; i < 4096; ++i) bytes[i] = static_cast<char>(0xab);  // rest of page 1
    write_all(file, bytes);
    auto r = Store::open(file);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == store_errc::corrupt);
    CHECK_THAT(r.error().message, Catch::Contains(file.string()));
    CHECK(read_all(file) == bytes);
}

TEST_CASE("store: a path that cannot be a database file gives open_failed") {
    TempDir dir;
    auto r = Store::open(dir.path());  // a directory
    REQUIRE_FALSE(r);
    CHECK(r.error().code == store_errc::open_failed);
    REQUIRE(::chmod(dir.path().c_str(), 0500) == 0);
    if (::geteuid() != 0) {  // root ignores directory permissions
        auto r2 = Store::open(dir.path() / "sub" / "juice.db");
        REQUIRE_FALSE(r2);
        CHECK(r2.error().code == store_errc::open_failed);
    }
    REQUIRE(::chmod(dir.path().c_str(), 0700) == 0);
}

TEST_CASE("store: a SQLite database of another program is refused as corrupt") {
    TempDir dir;
    auto file = dir.path() / "juice.db";
    open_store(file).reset();
    patch_header_u32(file, 68, 0x12345678);  // application_id
    auto before = read_all(file);
    auto r = Store::open(file);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == store_errc::corrupt);
    CHECK(read_all(file) == before);
}

TEST_CASE("store: a schema written by a newer juice is refused as too_new") {
    TempDir dir;
    auto file = dir.path() / "juice.db";
    People p;
    {
        auto store = open_store(file);
        auto m = message(p.me, p.alice, true, "x");
        REQUIRE(must(store->add_message(m)));
    }
    patch_header_u32(file, 60, 99);  // user_version
    auto r = Store::open(file);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == store_errc::too_new);
    CHECK_THAT(r.error().what(), Catch::Contains("newer"));

    patch_header_u32(file, 60, 2);  // back to the current version: opens again
    auto store = open_store(file);
    CHECK(must(store->history(p.alice, 10)).size() == 1);
}

TEST_CASE("store: text with NUL bytes, unicode and 64 KiB round trips") {
    TempDir dir;
    auto file = dir.path() / "juice.db";
    People p;
    std::string big(64 * 1024, 'z');
    for (std::size_t i = 0; i < big.size(); i += 97) big[i] = static_cast<char>('a' + i % 26);
    std::vector<std::string> samples{std::string("a\0b\0", 4), "héllo wörld 你好 🎉", big, ""};
    std::vector<MessageRecord> stored;
    auto store = open_store(file, Store::Sync::normal);
    for (auto& t : samples) {
        auto m = message(p.alice, p.me, false, t);
        REQUIRE(must(store->add_message(m)));
        stored.push_back(m);
    }
    must(store->put_contact({p.alice, std::string("al\0ice 🎉", 10), ContactState::blocked, 1, 2, {}, "", 0}));
    store.reset();
    store = open_store(file, Store::Sync::normal);
    for (auto& m : stored) CHECK(must(store->get_message(m.id)) == m);
    CHECK(texts(must(store->history(p.alice, 10))) == samples);
    CHECK(must(store->get_contact(p.alice))->name == std::string("al\0ice 🎉", 10));
}

TEST_CASE("store: state names round trip") {
    for (auto s :
         {ContactState::pending_out, ContactState::pending_in, ContactState::mutual, ContactState::blocked})
        CHECK(contact_state_from_string(to_string(s)) == s);
    for (auto s : {MessageState::queued, MessageState::sent, MessageState::delivered, MessageState::read})
        CHECK(message_state_from_string(to_string(s)) == s);
    CHECK(to_string(ContactState::pending_in) == "pending_in");
    CHECK(to_string(MessageState::delivered) == "delivered");
    CHECK_FALSE(contact_state_from_string("Mutual"));
    CHECK_FALSE(message_state_from_string(""));
    CHECK(make_error_code(store_errc::too_new).message().find("newer") != std::string::npos);
    CHECK(std::string(store_error_category().name()) == "juice.store");
}

TEST_CASE("store: history is in conversation order: the sender's clock, then arrival") {
    TempDir dir;
    auto store = open_store(dir.path() / "juice.db");
    People p;
    auto a = message(p.me, p.alice, true, "mine at 10", 10);
    auto b = message(p.alice, p.me, false, "theirs at 30", 30);
    auto late = message(p.alice, p.me, false, "theirs at 20, arrived last", 20);
    auto tie = message(p.me, p.alice, true, "mine at 30, after theirs", 30);
    for (auto* m : {&a, &b, &late, &tie}) REQUIRE(must(store->add_message(*m)));
    CHECK(texts(must(store->history(p.alice, 10))) ==
          std::vector<std::string>{"mine at 10", "theirs at 20, arrived last", "theirs at 30",
                                   "mine at 30, after theirs"});
    // Paging by the seq of a page's first message follows the same order.
    auto last2 = must(store->history(p.alice, 2));
    CHECK(texts(last2) == std::vector<std::string>{"theirs at 30", "mine at 30, after theirs"});
    CHECK(texts(must(store->history(p.alice, 10, last2.front().seq))) ==
          std::vector<std::string>{"mine at 10", "theirs at 20, arrived last"});
    // Reading up to the late message marks only what comes before it in that order.
    CHECK(must(store->mark_read_until(p.alice, late.seq)) == std::vector<MessageId>{late.id});
    CHECK(must(store->max_outgoing_ts()) == 30);
}

TEST_CASE("store: inbox values are kept per bundle and kind until removed") {
    TempDir dir;
    auto file = dir.path() / "juice.db";
    People p;
    {
        auto store = open_store(file);
        InboxValueRecord v1{11, p.alice, 100, InboxKind::messages, 5, {1, 2, 3}};
        InboxValueRecord v2{12, p.alice, 100, InboxKind::messages, 5, {4}};
        InboxValueRecord v3{13, p.alice, 200, InboxKind::acks, 6, {5}};
        InboxValueRecord v4{0xfedcba9876543210ULL, p.bob, 300, InboxKind::control, 7, {6}};
        for (auto* v : {&v1, &v2, &v3, &v4}) must(store->add_inbox_value(*v));
        auto m1 = message(p.me, p.alice, true, "one");
        auto m2 = message(p.me, p.alice, true, "two");
        REQUIRE(must(store->add_message(m1)));
        REQUIRE(must(store->add_message(m2)));
        must(store->set_message_inbox(m1.id, 100));
        must(store->set_message_inbox(m2.id, 100));
        CHECK(must(store->bundle_pending(100)) == 2);
        must(store->advance_message(m1.id, MessageState::delivered));
        CHECK(must(store->bundle_pending(100)) == 1);
        CHECK(must(store->undelivered_to(p.alice)).front().inbox == 100);
    }
    auto store = open_store(file);  // survives a reopen, 64-bit ids intact
    auto all = must(store->inbox_values());
    REQUIRE(all.size() == 4);
    CHECK(all[3].value_id == 0xfedcba9876543210ULL);
    CHECK(all[3].kind == InboxKind::control);
    CHECK(all[0].data == Bytes{1, 2, 3});
    must(store->remove_inbox_kind(p.alice, InboxKind::acks));
    must(store->remove_inbox_bundle(100));
    all = must(store->inbox_values());
    REQUIRE(all.size() == 1);
    CHECK(all[0].peer == p.bob);
}

TEST_CASE("store: declined requests remember the newest declined time") {
    TempDir dir;
    auto store = open_store(dir.path() / "juice.db");
    People p;
    CHECK_FALSE(must(store->declined_until(p.alice)).has_value());
    must(store->set_declined(p.alice, 50));
    must(store->set_declined(p.alice, 40));  // never goes back
    CHECK(must(store->declined_until(p.alice)) == std::optional<std::int64_t>(50));
}

TEST_CASE("store: a version 1 database is migrated with its data intact") {
    TempDir dir;
    auto file = dir.path() / "juice.db";
    People p;
    {
        // The schema as juice 0.1.0 wrote it, with one contact and one message.
        sqlite3* raw = nullptr;
        REQUIRE(sqlite3_open(file.c_str(), &raw) == SQLITE_OK);
        std::unique_ptr<sqlite3, decltype(&sqlite3_close)> db(raw, &sqlite3_close);
        const char* v1 = R"sql(
PRAGMA journal_mode = WAL;
CREATE TABLE contacts(id BLOB PRIMARY KEY NOT NULL, name TEXT NOT NULL, state INTEGER NOT NULL,
    added INTEGER NOT NULL, last_seen INTEGER NOT NULL);
CREATE TABLE messages(seq INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB UNIQUE NOT NULL, sender BLOB NOT NULL,
    recipient BLOB NOT NULL, peer BLOB NOT NULL, text TEXT NOT NULL, ts INTEGER NOT NULL, state INTEGER NOT NULL,
    outgoing INTEGER NOT NULL);
CREATE INDEX messages_by_peer ON messages(peer, seq);
CREATE INDEX messages_outbox ON messages(peer, seq) WHERE outgoing = 1 AND state < 2;
CREATE TABLE settings(key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
PRAGMA user_version = 1;
PRAGMA application_id = 1786079587;
)sql";
        REQUIRE(sqlite3_exec(db.get(), v1, nullptr, nullptr, nullptr) == SQLITE_OK);
        sqlite3_stmt* st = nullptr;
        REQUIRE(sqlite3_prepare_v2(db.get(), "INSERT INTO contacts VALUES(?1, 'alice', 2, 5, 6)", -1, &st,
                                   nullptr) == SQLITE_OK);
        sqlite3_bind_blob(st, 1, p.alice.bytes.data(), static_cast<int>(p.alice.bytes.size()), SQLITE_STATIC);
        REQUIRE(sqlite3_step(st) == SQLITE_DONE);
        sqlite3_finalize(st);
        auto m = MessageId::random();
        REQUIRE(sqlite3_prepare_v2(db.get(),
                                   "INSERT INTO messages VALUES(NULL, ?1, ?2, ?3, ?3, 'old', 77, 1, 1)", -1,
                                   &st, nullptr) == SQLITE_OK);
        sqlite3_bind_blob(st, 1, m.bytes.data(), static_cast<int>(m.bytes.size()), SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, p.me.bytes.data(), static_cast<int>(p.me.bytes.size()), SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, p.alice.bytes.data(), static_cast<int>(p.alice.bytes.size()), SQLITE_STATIC);
        REQUIRE(sqlite3_step(st) == SQLITE_DONE);
        sqlite3_finalize(st);
    }
    auto store = open_store(file);
    auto c = must(store->get_contact(p.alice));
    REQUIRE(c.has_value());
    CHECK(c->name == "alice");
    CHECK(c->state == ContactState::mutual);
    CHECK(c->pubkey.empty());
    CHECK(c->request.empty());
    auto h = must(store->history(p.alice, 10));
    REQUIRE(h.size() == 1);
    CHECK(h[0].text == "old");
    CHECK(h[0].inbox == 0);
    CHECK(must(store->undelivered_to(p.alice)).size() == 1);
    CHECK(must(store->inbox_values()).empty());
}

TEST_CASE("store: mark_bundle_sent moves only that bundle's queued messages") {
    TempDir dir;
    auto store = open_store(dir.path() / "juice.db");
    People p;
    auto q1 = message(p.me, p.alice, true, "q1");
    auto q2 = message(p.me, p.alice, true, "q2");
    auto done = message(p.me, p.alice, true, "done", 1000, MessageState::delivered);
    auto other = message(p.me, p.alice, true, "other bundle");
    for (auto* m : {&q1, &q2, &done, &other}) REQUIRE(must(store->add_message(*m)));
    for (auto* m : {&q1, &q2, &done}) must(store->set_message_inbox(m->id, 5));
    must(store->set_message_inbox(other.id, 6));
    auto ids = must(store->mark_bundle_sent(5));
    std::sort(ids.begin(), ids.end());
    std::vector<MessageId> want{q1.id, q2.id};
    std::sort(want.begin(), want.end());
    CHECK(ids == want);
    CHECK(must(store->get_message(done.id))->state == MessageState::delivered);
    CHECK(must(store->get_message(other.id))->state == MessageState::queued);
    CHECK(must(store->mark_bundle_sent(5)).empty());
}
