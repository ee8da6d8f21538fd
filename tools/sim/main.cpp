// juice-sim: the scale simulation (docs/SCALE.md). Prints one JSON report on
// stdout (or --out FILE), progress on stderr.
//
//   juice-sim dht --nodes 1000 --buddies 10        the juice model, every scenario
//   juice-sim broadcast --nodes 1000 --buddies 10  the classic broadcast design
//   juice-sim buddies --probes 0,10,50,100         idle traffic against offline buddies
//
// tools/scale.sh runs the sweep behind docs/SCALE.md and draws its plots.
#include "sim.hpp"

#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>

int main(int argc, char** argv) {
    using namespace juice::sim;
    CLI::App app{"juice-sim: juice's DHT presence against a broadcast design, measured on loopback"};
    app.require_subcommand(1);
    std::string out;
    app.add_option("--out", out, "write the JSON report to this file instead of stdout");
    std::string log_level = "error";
    app.add_option("--log-level", log_level,
                   "log of the simulated nodes (to stderr): trace, debug, info, warn, error")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));

    DhtConfig d;
    std::string key_cache;
    auto* dht = app.add_subcommand(
        "dht", "N real juice DHT nodes: login, lookup, update, idle, online, churn, mass login");
    dht->add_option("--nodes", d.nodes, "users online at the start")->check(CLI::Range(2, 5000));
    dht->add_option("--buddies", d.buddies, "buddies per user")->check(CLI::Range(0, 500));
    dht->add_option("--login-rate", d.login_rate, "users started per second at login")
        ->check(CLI::Range(1.0, 1000.0));
    dht->add_option("--settle", d.settle_s, "seconds to settle after login")->check(CLI::Range(0, 3600));
    dht->add_option("--watch-spread", d.watch_spread_s,
                    "seconds over which users start watching their buddies")
        ->check(CLI::Range(0, 3600));
    dht->add_option("--update-spread", d.update_spread_s, "seconds over which every user publishes an update")
        ->check(CLI::Range(1, 3600));
    dht->add_option("--idle", d.idle_s, "idle traffic window, seconds (>= 290 covers one refresh cycle)")
        ->check(CLI::Range(10, 7200));
    dht->add_option("--online", d.online, "users that come online one by one (0 = 5% of nodes)")
        ->check(CLI::Range(0, 5000));
    dht->add_option("--churn", d.churn, "share of users that leave while as many join")
        ->check(CLI::Range(0.0, 0.9));
    dht->add_option("--churn-spread", d.churn_spread_s, "seconds over which churn happens")
        ->check(CLI::Range(1, 3600));
    dht->add_option("--churn-window", d.churn_window_s, "traffic window from churn start, seconds")
        ->check(CLI::Range(1, 3600));
    dht->add_option("--mass-login", d.mass_login, "users started within --mass-login-s (0 = 10% of nodes)")
        ->check(CLI::Range(0, 5000));
    dht->add_option("--mass-login-s", d.mass_login_s, "seconds for the mass login")
        ->check(CLI::Range(1, 600));
    dht->add_option("--grace", d.grace_s, "seconds to wait for late events after a phase")
        ->check(CLI::Range(1, 600));
    dht->add_option("--key-bits", d.key_bits, "RSA size of the simulated users' keys")
        ->check(CLI::IsMember({2048u, 3072u, 4096u}));
    dht->add_option("--key-cache", key_cache, "where generated keys are kept between runs");
    dht->add_option("--seed", d.seed, "random seed (0 = random; printed)");
    dht->add_flag("--samples", d.samples, "include raw latency samples (for CDF plots)");
    dht->add_option("--republish", d.republish_s,
                    "seconds between each user's fresh records, as juiced (0 = never)")
        ->check(CLI::Range(0, 3600));
    dht->add_option("--procs", d.procs, "processes to spread the users over (0 = one per 150 users)")
        ->check(CLI::Range(0, 64));
    bool raw = false;
    dht->add_option("--join", d.join, "(a group's process) join this bootstrap node instead of starting one");
    dht->add_option("--network", d.network, "(a group's process) the network id of --join");
    dht->add_option("--key-offset", d.key_offset, "(a group's process) first key of the cache to use")
        ->check(CLI::Range(0, 1000000));
    dht->add_flag("--fixed-phases", d.fixed_phases, "(a group's process) give every phase its whole time");
    dht->add_flag("--raw", raw, "(a group's process) keep raw samples in the report, for merging");
    dht->add_flag("!--no-stable-listens", d.stable_listens,
                  "refresh listens every 20 s (OpenDHT's default) instead of every 4 min 50 s");

    BuddiesConfig b;
    auto* bud =
        app.add_subcommand("buddies", "idle traffic of users watching 0..K buddies who never come online");
    bud->add_option("--nodes", b.nodes, "background users (10 buddies each)")->check(CLI::Range(2, 5000));
    bud->add_option("--probes", b.probe_buddies, "one probe user per value: its number of offline buddies")
        ->delimiter(',')
        ->check(CLI::Range(0, 1000));
    bud->add_option("--settle", b.settle_s,
                    "seconds before measuring (-1: 60, or --dormant-after + 30 so the watches sleep first)")
        ->check(CLI::Range(-1, 7200));
    bud->add_option("--idle", b.idle_s, "measurement window, seconds")->check(CLI::Range(10, 7200));
    bud->add_option("--key-bits", b.key_bits, "RSA size of the keys")
        ->check(CLI::IsMember({2048u, 3072u, 4096u}));
    bud->add_option("--key-cache", key_cache, "where generated keys are kept between runs");
    bud->add_option("--seed", b.seed, "random seed (0 = random; printed)");
    bud->add_option("--republish", b.republish_s, "seconds between each user's fresh records (0 = never)")
        ->check(CLI::Range(0, 3600));
    bud->add_flag("!--no-stable-listens", b.stable_listens, "refresh listens every 20 s (OpenDHT's default)");
    bud->add_option("--dormant-after", b.dormant_after_s,
                    "seconds before a watch of an offline buddy stops listening, as juiced "
                    "--presence-dormant-after (0 = always listen)")
        ->check(CLI::Range(0, 86400))
        ->capture_default_str();
    bud->add_option("--poll", b.poll_s, "seconds between gets of a dormant buddy, as juiced --presence-poll")
        ->check(CLI::Range(0, 86400))
        ->capture_default_str();

    BroadcastConfig c;
    auto* bc = app.add_subcommand("broadcast",
                                  "the classic design: a relay forwards every ping and message to everyone");
    bc->add_option("--nodes", c.nodes, "users")->check(CLI::Range(2, 5000));
    bc->add_option("--buddies", c.buddies, "buddies per user")->check(CLI::Range(0, 500));
    bc->add_option("--ping-interval", c.ping_interval_s, "seconds between a user's pings")
        ->check(CLI::Range(1.0, 3600.0));
    bc->add_option("--messages-per-min", c.messages_per_min, "messages each user sends per minute")
        ->check(CLI::Range(0.0, 600.0));
    bc->add_option("--window", c.window_s, "measurement window, seconds")->check(CLI::Range(5, 7200));
    bc->add_option("--seed", c.seed, "random seed (0 = random)");

    CLI11_PARSE(app, argc, argv);
    spdlog::set_level(spdlog::level::from_str(log_level));
    set_raw_samples(raw);

    // Each simulated node holds a few sockets: raise the soft fd limit.
    rlimit lim{};
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }

    nlohmann::json report;
    try {
        if (*dht) {
            d.key_cache = key_cache;
            report = run_dht(d);
        } else if (*bud) {
            b.key_cache = key_cache;
            report = run_buddies(b);
        } else {
            report = run_broadcast(c);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "juice-sim: %s\n", e.what());
        return 1;
    }
    if (out.empty()) {
        std::cout << report.dump(2) << "\n";
    } else {
        std::ofstream f(out);
        f << report.dump(2) << "\n";
        if (!f) {
            std::fprintf(stderr, "juice-sim: could not write %s\n", out.c_str());
            return 1;
        }
    }
    return 0;
}
