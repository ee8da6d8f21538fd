// Crash safety: two real juiced daemons exchange a few thousand messages
// while a killer thread SIGKILLs and restarts them at random moments. At the
// end every message that a daemon acknowledged must be in both histories
// exactly once, in order, and delivered; a send whose call failed (its fate
// is unknown) may be missing, but never half there or duplicated.
//
// Only the documented API is used (docs/API.md): messages.send's reply means
// "stored", messages.history pages oldest first with `before: seq`.
//
// The kill schedule and the message plan come from a seeded RNG; the seed is
// printed, and JUICE_CRASH_SEED=<n> replays the same schedule (the exact
// moments still depend on timing). JUICE_KEEP_TEST_DIRS=1 keeps the daemons'
// logs; on a failure they are also copied to $TMPDIR/juice-crash-<seed>/.
#include "harness.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

using namespace juice::test;
using json = nlohmann::json;
using juice::node::api::ApiClient;
using Clock = std::chrono::steady_clock;

namespace {

// ---- knobs ------------------------------------------------------------------

constexpr int k_a2b_messages = 2500;  // alice -> bob
constexpr int k_b2a_messages = 500;   // bob -> alice
constexpr int k_min_kills = 12;
constexpr int k_max_kills = 20;
constexpr double k_kill_from = 0.03, k_kill_to = 0.90;  // kills happen within this share of the sends
constexpr int k_both_kill_percent = 20;                 // a kill takes down both daemons at once
constexpr auto k_max_downtime = 1500ms;                 // a killed daemon stays down 0..this
constexpr auto k_call_timeout = 2s;                     // one messages.send
constexpr auto k_connect_timeout = 200ms;               // one API connect attempt
constexpr auto k_restart_timeout = 20s;                 // Juiced::start after a kill
constexpr auto k_send_deadline = 40s;                   // the whole send phase (takes ~15-20 s)
constexpr auto k_settle_timeout = 45s;                  // until every outgoing message is delivered
constexpr std::size_t k_page = 1000;                    // messages.history limit (the API's maximum)

// ---- the message plan ---------------------------------------------------------

// One direction of traffic. Texts are "<tag>-<index, 6 digits>", unique.
struct Direction {
    enum class Outcome { not_sent, acked, failed, rejected };

    std::string tag;
    Juiced* from = nullptr;
    Juiced* to = nullptr;
    std::string from_id, to_id;  // copied before the threads start (Juiced is not thread-safe)
    int count = 0;
    std::vector<Outcome> outcome;
    std::vector<std::string> msg_id;  // for acked sends
    std::vector<std::string> error;   // for failed/rejected sends

    Direction(std::string t, Juiced& f, Juiced& d, int n)
        : tag(std::move(t)),
          from(&f),
          to(&d),
          from_id(f.id()),
          to_id(d.id()),
          count(n),
          outcome(n, Outcome::not_sent),
          msg_id(n),
          error(n) {}

    std::string text(int index) const {
        char buf[16];
        std::snprintf(buf, sizeof buf, "%06d", index);
        return tag + "-" + buf;
    }
    // The index carried by a text of this direction, or -1.
    int index_of(const std::string& text) const {
        if (text.size() != tag.size() + 7 || text.compare(0, tag.size() + 1, tag + "-") != 0) return -1;
        int v = 0;
        for (std::size_t i = tag.size() + 1; i < text.size(); ++i) {
            if (text[i] < '0' || text[i] > '9') return -1;
            v = v * 10 + (text[i] - '0');
        }
        return v < count ? v : -1;
    }
    int tally(Outcome o) const { return static_cast<int>(std::count(outcome.begin(), outcome.end(), o)); }
};

// ---- reading histories -------------------------------------------------------

struct Entry {
    std::string msg_id, from, to, text, state;
    std::int64_t seq = 0;
    std::int64_t ts = 0;
};

// The whole history with `peer`, oldest first, paging back with `before`.
std::vector<Entry> full_history(Juiced& d, const std::string& peer) {
    std::vector<std::vector<Entry>> pages;  // newest page first
    std::optional<std::int64_t> before;
    for (int guard = 0; guard < 1000; ++guard) {
        json params{{"with", peer}, {"limit", k_page}};
        if (before) params["before"] = *before;
        auto page = d.call("messages.history", params);
        if (!page.is_array() || page.empty()) break;
        std::vector<Entry> out;
        for (auto& m : page)
            out.push_back({m.at("msg_id").get<std::string>(), m.at("from").get<std::string>(),
                           m.at("to").get<std::string>(), m.at("text").get<std::string>(),
                           m.at("state").get<std::string>(), m.at("seq").get<std::int64_t>(),
                           m.at("ts").get<std::int64_t>()});
        before = out.front().seq;
        pages.push_back(std::move(out));
    }
    std::vector<Entry> all;
    for (auto it = pages.rbegin(); it != pages.rend(); ++it) all.insert(all.end(), it->begin(), it->end());
    return all;
}

bool is_delivered(const std::string& state) {
    return state == "delivered" || state == "read";
}

// Outgoing messages of `d` (to `peer`) that are not delivered yet, by state.
std::map<std::string, int> undelivered(const std::vector<Entry>& h, const std::string& self) {
    std::map<std::string, int> out;
    for (auto& e : h)
        if (e.from == self && !is_delivered(e.state)) ++out[e.state];
    return out;
}

std::string describe(const std::map<std::string, int>& m) {
    std::ostringstream os;
    for (auto& [k, v] : m) os << k << "=" << v << " ";
    return m.empty() ? "none" : os.str();
}

// Collects failed expectations of one kind, reports the first few.
struct Problems {
    std::vector<std::string> items;
    void add(std::string s) { items.push_back(std::move(s)); }
    std::string summary(std::size_t max = 25) const {
        std::ostringstream os;
        os << items.size() << " problem(s)";
        for (std::size_t i = 0; i < items.size() && i < max; ++i) os << "\n  " << items[i];
        if (items.size() > max) os << "\n  ...";
        return os.str();
    }
};

std::uint64_t crash_seed() {
    if (const char* s = std::getenv("JUICE_CRASH_SEED"); s && *s) return std::strtoull(s, nullptr, 0);
    return (static_cast<std::uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
}

double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The last few KiB of a daemon's log.
std::string log_tail(const Juiced& d, std::size_t bytes = 4000) {
    auto log = d.log();
    return log.size() > bytes ? log.substr(log.size() - bytes) : log;
}

// Log lines of a daemon that mention any of `needles`, for evidence.
std::string log_lines(const Juiced& d, const std::vector<std::string>& needles, std::size_t max = 40) {
    std::istringstream in(d.log());
    std::string line, out;
    std::size_t n = 0;
    while (std::getline(in, line) && n < max)
        for (auto& w : needles)
            if (line.find(w) != std::string::npos) {
                out += "  " + line + "\n";
                ++n;
                break;
            }
    return out;
}

}  // namespace

TEST_CASE("crash safety: messages survive kill -9 of sender and receiver", "[daemon][crash]") {
    const auto t_start = Clock::now();
    const std::uint64_t seed = crash_seed();
    WARN("crash-safety seed " << seed << " (replay with JUICE_CRASH_SEED=" << seed << ")");
    INFO("seed " << seed);

    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    Juiced a("alice", dir.path(), boot), b("bob", dir.path(), boot);
    REQUIRE(a.start());
    REQUIRE(b.start());
    INFO("alice " << a.id() << " bob " << b.id() << " dir " << dir.path().string());

    a.call("contacts.add", {{"id", b.id()}, {"name", "bob"}});
    b.call("contacts.add", {{"id", a.id()}, {"name", "alice"}});
    auto linked = [](Juiced& d, const std::string& peer) {
        for (auto& c : d.call("contacts.list"))
            if (c["id"] == peer) return c["linked"] == true;
        return false;
    };
    REQUIRE(wait_until([&] { return linked(a, b.id()) && linked(b, a.id()); }, 30s));

    Direction a2b("a2b", a, b, k_a2b_messages), b2a("b2a", b, a, k_b2a_messages);
    Direction* dirs[2] = {&a2b, &b2a};

    // The send order: every text once, directions interleaved at random.
    std::vector<int> plan(k_a2b_messages, 0);
    plan.insert(plan.end(), k_b2a_messages, 1);
    std::shuffle(plan.begin(), plan.end(), std::mt19937_64(seed));

    std::atomic<int> progress{0};  // sends attempted so far
    std::atomic<bool> sender_done{false}, abort_run{false};
    std::mutex mu;  // guards the strings below
    std::string sender_error, killer_error;
    std::vector<std::string> timeline;  // what the killer did, for the report
    int kills = 0;
    double send_seconds = 0;

    // Both threads are std::jthread: if anything below throws, their
    // destructors ask them to stop and join them before the daemons go.
    std::jthread sender([&](std::stop_token stop) {
        const auto t0 = Clock::now();
        const auto deadline = t0 + k_send_deadline;
        auto halt = [&] { return stop.stop_requested() || abort_run.load(); };
        auto fail = [&](const std::string& why) {
            std::lock_guard lk(mu);
            sender_error = why;
        };
        try {
            std::optional<ApiClient> client[2];
            int next[2] = {0, 0};
            for (std::size_t step = 0; step < plan.size() && !halt(); ++step) {
                const auto left =
                    std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
                if (left.count() <= 0) {
                    fail("the send phase did not finish within " + std::to_string(k_send_deadline.count()) +
                         " s (" + std::to_string(step) + " of " + std::to_string(plan.size()) + " sent)");
                    break;
                }
                const int di = plan[step];
                Direction& d = *dirs[di];
                // A daemon that is down: wait for it to come back, then go
                // on with the next text (a failed text is never resent).
                if (!client[di]) {
                    bool ok = wait_until(
                        [&] {
                            if (halt()) return true;
                            auto c = ApiClient::connect(d.from->socket(), k_connect_timeout);
                            if (c) client[di].emplace(std::move(*c));
                            return client[di].has_value();
                        },
                        left);
                    if (halt()) break;
                    if (!ok) {
                        fail(d.from->name() + " did not come back before the send deadline");
                        break;
                    }
                }
                const int i = next[di]++;
                auto r =
                    client[di]->call("messages.send", {{"to", d.to_id}, {"text", d.text(i)}}, k_call_timeout);
                if (!r) {
                    d.outcome[i] = Direction::Outcome::failed;  // stored or not: unknown
                    d.error[i] = r.error().what();
                    client[di].reset();
                } else if (!r->ok()) {
                    d.outcome[i] = Direction::Outcome::rejected;  // the daemon said no: nothing stored
                    d.error[i] = r->error->reason + ": " + r->error->message;
                } else {
                    d.outcome[i] = Direction::Outcome::acked;
                    d.msg_id[i] = r->result.is_object() ? r->result.value("msg_id", "") : "";
                }
                ++progress;
            }
        } catch (const std::exception& e) {
            fail(std::string("sender: ") + e.what());
        }
        send_seconds = seconds_since(t0);
        sender_done = true;
    });

    // The kill schedule: n moments, as numbers of sends attempted, so the
    // kills land among the traffic however fast this machine is.
    auto kill_loop = [&](std::stop_token stop) -> std::string {
        std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
        const int total = static_cast<int>(plan.size());
        const int n = std::uniform_int_distribution<int>(k_min_kills, k_max_kills)(rng);
        std::uniform_int_distribution<int> at(static_cast<int>(total * k_kill_from),
                                              static_cast<int>(total * k_kill_to));
        std::vector<int> moments;
        for (int k = 0; k < n; ++k) moments.push_back(at(rng));
        std::sort(moments.begin(), moments.end());
        for (int moment : moments) {
            // Meanwhile, a daemon that dies although we did not kill it has
            // crashed: stop the run at once.
            wait_until(
                [&] {
                    return progress >= moment || sender_done || stop.stop_requested() || !a.running() ||
                           !b.running();
                },
                k_send_deadline + 10s);
            for (Juiced* d : {&a, &b})
                if (!d->running()) return d->name() + " died on its own; end of its log:\n" + log_tail(*d);
            if (sender_done || stop.stop_requested()) return {};
            const int pick = std::uniform_int_distribution<int>(0, 99)(rng);
            std::vector<Juiced*> victims;
            if (pick < k_both_kill_percent)
                victims = {&a, &b};
            else
                victims = {pick % 2 ? &a : &b};
            const auto down = std::chrono::milliseconds(
                std::uniform_int_distribution<long>(0, k_max_downtime.count())(rng));
            const double t_kill = seconds_since(t_start);
            const int at_send = progress.load();
            for (Juiced* v : victims) v->kill9();
            ++kills;
            // The deliberate downtime (the only fixed wait in this test).
            std::this_thread::sleep_for(down);
            const auto t_up = Clock::now();
            std::string who;
            for (Juiced* v : victims) {
                if (!v->start(k_restart_timeout)) return "restart failed: " + v->error;
                who += (who.empty() ? "" : "+") + v->name();
            }
            std::ostringstream os;
            os << "t=" << t_kill << " s after " << at_send << " sends: kill " << who << ", down "
               << down.count() << " ms, restart took " << static_cast<int>(seconds_since(t_up) * 1000)
               << " ms";
            std::lock_guard lk(mu);
            timeline.push_back(os.str());
        }
        return {};
    };
    std::jthread killer([&](std::stop_token stop) {
        std::string why;
        try {
            why = kill_loop(stop);
        } catch (const std::exception& e) {
            why = std::string("killer: ") + e.what();
        }
        if (!why.empty()) {
            std::lock_guard lk(mu);
            killer_error = why;
            abort_run = true;
        }
    });

    sender.join();
    killer.join();
    std::string history_of_kills;
    for (auto& t : timeline) history_of_kills += "  " + t + "\n";
    INFO("kills:\n" << history_of_kills);
    INFO("killer: " << (killer_error.empty() ? "ok" : killer_error));
    INFO("sender: " << (sender_error.empty() ? "ok" : sender_error));
    REQUIRE(killer_error.empty());
    REQUIRE(sender_error.empty());
    REQUIRE(progress.load() == k_a2b_messages + k_b2a_messages);

    // The killer restarts what it kills, so both must be up; one that is
    // down died on its own (a crash). Restart it anyway to check the rest.
    for (Juiced* d : {&a, &b})
        if (!d->running()) {
            FAIL_CHECK(d->name() << " died on its own; end of its log:\n" << log_tail(*d));
            REQUIRE(d->start(k_restart_timeout));
        }

    // Bounded wait until every outgoing message on both sides is delivered.
    std::vector<Entry> ha, hb;
    const auto t_settle = Clock::now();
    bool settled = wait_until(
        [&] {
            ha = full_history(a, b.id());
            hb = full_history(b, a.id());
            return undelivered(ha, a.id()).empty() && undelivered(hb, b.id()).empty();
        },
        k_settle_timeout, 250ms);
    const double settle_seconds = seconds_since(t_settle);
    ha = full_history(a, b.id());
    hb = full_history(b, a.id());

    // ---- the checks --------------------------------------------------------
    Problems acked_p, failed_p, unique_p, order_p, state_p;
    auto sender_hist = [&](const Direction& d) -> const std::vector<Entry>& {
        return d.from == &a ? ha : hb;
    };
    auto receiver_hist = [&](const Direction& d) -> const std::vector<Entry>& {
        return d.to == &a ? ha : hb;
    };

    // (3) No msg_id twice in one history, and each history is in
    // conversation order: by the sender's timestamp, then by seq.
    for (auto* h : {&ha, &hb}) {
        const std::string who = h == &ha ? "alice" : "bob";
        std::set<std::string> seen;
        for (std::size_t i = 0; i < h->size(); ++i) {
            const Entry& e = (*h)[i];
            if (!seen.insert(e.msg_id).second)
                unique_p.add(who + ": msg_id " + e.msg_id + " (" + e.text + ") appears twice");
            const Entry* prev = i > 0 ? &(*h)[i - 1] : nullptr;
            if (prev && std::make_pair(prev->ts, prev->seq) >= std::make_pair(e.ts, e.seq))
                order_p.add(who + ": history not in (ts, seq) order at " + e.text + " (ts " +
                            std::to_string(prev->ts) + "/seq " + std::to_string(prev->seq) + " then ts " +
                            std::to_string(e.ts) + "/seq " + std::to_string(e.seq) + ")");
        }
    }

    for (Direction* dp : dirs) {
        Direction& d = *dp;
        // Where each index of this direction appears, in history order.
        auto collect = [&](const std::vector<Entry>& h, const std::string& side) {
            std::vector<std::vector<const Entry*>> at(d.count);
            std::vector<int> order;
            for (auto& e : h) {
                if (e.from != d.from_id) continue;
                int i = d.index_of(e.text);
                if (i < 0 || e.to != d.to_id) {
                    unique_p.add(side + ": unexpected message from " + d.from->name() + ": '" + e.text +
                                 "' to " + e.to);
                    continue;
                }
                at[i].push_back(&e);
                order.push_back(i);
            }
            return std::make_pair(at, order);
        };
        auto [on_sender, sender_order] = collect(sender_hist(d), d.from->name());
        auto [on_receiver, receiver_order] = collect(receiver_hist(d), d.to->name());

        for (int i = 0; i < d.count; ++i) {
            const std::string t = d.text(i);
            const auto& s = on_sender[i];
            const auto& r = on_receiver[i];
            switch (d.outcome[i]) {
                case Direction::Outcome::acked:  // (1)
                    if (s.size() != 1 || r.size() != 1)
                        acked_p.add(t + " (acked " + d.msg_id[i] + "): " + std::to_string(s.size()) +
                                    "x on " + d.from->name() + ", " + std::to_string(r.size()) + "x on " +
                                    d.to->name());
                    else if (s[0]->msg_id != d.msg_id[i] || r[0]->msg_id != d.msg_id[i])
                        acked_p.add(t + ": acked as " + d.msg_id[i] + " but stored as " + s[0]->msg_id +
                                    " / " + r[0]->msg_id);
                    break;
                case Direction::Outcome::failed:  // (2)
                    if (s.size() > 1 || r.size() != s.size())
                        failed_p.add(t + " (call failed: " + d.error[i] + "): " + std::to_string(s.size()) +
                                     "x on " + d.from->name() + ", " + std::to_string(r.size()) + "x on " +
                                     d.to->name());
                    else if (s.size() == 1 && s[0]->msg_id != r[0]->msg_id)
                        failed_p.add(t + ": msg_id " + s[0]->msg_id + " on the sender, " + r[0]->msg_id +
                                     " on the receiver");
                    break;
                case Direction::Outcome::rejected:
                case Direction::Outcome::not_sent:
                    if (!s.empty() || !r.empty())
                        failed_p.add(t + " was never stored by a send, yet appears " +
                                     std::to_string(s.size()) + "x / " + std::to_string(r.size()) + "x");
                    break;
            }
            // (4) Every outgoing message is delivered on the sender side.
            for (auto* e : s)
                if (!is_delivered(e->state))
                    state_p.add(t + " (" + e->msg_id + ") is '" + e->state + "' on " + d.from->name());
        }
        // (3) Order: increasing index on the sender, the same sequence on
        // the receiver.
        for (std::size_t k = 1; k < sender_order.size(); ++k)
            if (sender_order[k - 1] >= sender_order[k])
                order_p.add(d.from->name() + " history: " + d.text(sender_order[k - 1]) + " before " +
                            d.text(sender_order[k]));
        if (sender_order != receiver_order) {
            std::size_t k = 0;
            while (k < sender_order.size() && k < receiver_order.size() &&
                   sender_order[k] == receiver_order[k])
                ++k;
            order_p.add(d.tag + ": the receiver's order differs from the sender's at position " +
                        std::to_string(k) + " (sender " +
                        (k < sender_order.size() ? d.text(sender_order[k]) : "end") + ", receiver " +
                        (k < receiver_order.size() ? d.text(receiver_order[k]) : "end") + ")");
        }
    }

    const int acked = a2b.tally(Direction::Outcome::acked) + b2a.tally(Direction::Outcome::acked);
    const int failed = a2b.tally(Direction::Outcome::failed) + b2a.tally(Direction::Outcome::failed);
    const int rejected = a2b.tally(Direction::Outcome::rejected) + b2a.tally(Direction::Outcome::rejected);
    int failed_stored = 0;
    for (Direction* dp : dirs)
        for (int i = 0; i < dp->count; ++i)
            if (dp->outcome[i] == Direction::Outcome::failed)
                for (auto& e : sender_hist(*dp))
                    if (e.text == dp->text(i)) ++failed_stored;
    const bool ok = settled && rejected == 0 && acked_p.items.empty() && failed_p.items.empty() &&
                    unique_p.items.empty() && order_p.items.empty() && state_p.items.empty();
    WARN("crash-safety seed " << seed << ": " << acked << " acknowledged, " << failed << " failed calls ("
                              << failed_stored << " of them stored), " << rejected << " rejected, " << kills
                              << " kills, send " << send_seconds << " s, settle " << settle_seconds
                              << " s, total " << seconds_since(t_start) << " s, " << (ok ? "ok" : "FAILED"));

    if (!ok) {
        // Keep the evidence: the daemons' logs, both histories as read, what
        // each send call returned and the kill timeline.
        const char* base = std::getenv("TMPDIR");
        std::filesystem::path keep =
            std::filesystem::path(base && *base ? base : "/tmp") / ("juice-crash-" + std::to_string(seed));
        std::error_code ec;
        std::filesystem::create_directories(keep, ec);
        for (Juiced* d : {&a, &b})
            std::filesystem::copy_file(d->data_dir() / "juiced.log", keep / (d->name() + ".log"),
                                       std::filesystem::copy_options::overwrite_existing, ec);
        for (auto [h, name] : {std::pair{&ha, "alice"}, std::pair{&hb, "bob"}}) {
            std::ofstream out(keep / (std::string(name) + "-history.tsv"));
            out << "seq\tmsg_id\tfrom\ttext\tstate\n";
            for (auto& e : *h)
                out << e.seq << '\t' << e.msg_id << '\t' << e.from.substr(0, 8) << '\t' << e.text << '\t'
                    << e.state << '\n';
        }
        {
            const char* names[] = {"not_sent", "acked", "failed", "rejected"};
            std::ofstream out(keep / "sends.tsv");
            out << "text\toutcome\tmsg_id\terror\n";
            for (Direction* dp : dirs)
                for (int i = 0; i < dp->count; ++i)
                    out << dp->text(i) << '\t' << names[static_cast<int>(dp->outcome[i])] << '\t'
                        << dp->msg_id[i] << '\t' << dp->error[i] << '\n';
        }
        std::ofstream(keep / "kills.txt") << history_of_kills;
        const std::vector<std::string> bad{" warn ", " error ", " critical ", "cannot"};
        WARN("crash-safety: evidence kept in " << keep.string() << " (logs, histories, sends, kills)\n"
                                               << "warnings and errors, alice:\n"
                                               << log_lines(a, bad, 15) << "warnings and errors, bob:\n"
                                               << log_lines(b, bad, 15));
    }

    // Each check in its own scope, so a failure shows only its own details.
    {
        INFO("undelivered at the end: alice " << describe(undelivered(ha, a.id())) << ", bob "
                                              << describe(undelivered(hb, b.id())));
        CHECK(settled);
    }
    CHECK(rejected == 0);
    {
        INFO("(1) acknowledged sends: " << acked_p.summary());
        CHECK(acked_p.items.empty());
    }
    {
        INFO("(2) failed calls: " << failed_p.summary());
        CHECK(failed_p.items.empty());
    }
    {
        INFO("(3) duplicates and strangers: " << unique_p.summary());
        CHECK(unique_p.items.empty());
    }
    {
        INFO("(3) order: " << order_p.summary());
        CHECK(order_p.items.empty());
    }
    {
        INFO("(4) delivery state: " << state_p.summary());
        CHECK(state_p.items.empty());
    }

    CHECK(a.stop() == 0);
    CHECK(b.stop() == 0);
}
