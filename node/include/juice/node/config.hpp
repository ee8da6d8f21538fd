// Every knob of the daemon, with its default. juiced's flags fill this in;
// tests and tools build it directly.
#pragma once

#include "juice/node/store.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace juice::node {

// A numeric "IP:PORT" ("[v6]:PORT" too), as --stun and --turn take it.
struct IpPort {
    std::string ip;
    std::uint16_t port = 0;
};
// nullopt unless `s` is a numeric IP address and a port 1..65535.
std::optional<IpPort> parse_ip_port(std::string_view s);

struct Config {
    // Where identity, database and node cache live:
    // $XDG_DATA_HOME/juice, or ~/.local/share/juice.
    std::filesystem::path data_dir = default_data_dir();
    // The local API socket (see api::default_socket_path()).
    std::filesystem::path api_socket;

    // DHT
    std::uint16_t dht_port = 0;          // UDP; 0 = any free port
    std::uint64_t network = 0;           // OpenDHT network id; 0 = the public network
    std::vector<std::string> bootstrap;  // "host:port"; empty + network 0 = default public bootstrap
    bool lan_discovery = true;           // OpenDHT multicast peer discovery on the LAN
    // Drop DHT datagrams from one IP address above this rate, before OpenDHT
    // parses them (0 = no limit). The bootstrap node defaults to 200.
    std::uint32_t max_packets_per_ip = 0;

    // Operator metrics (Prometheus text at http://metrics_bind:metrics_port/metrics);
    // port 0 = off.
    std::uint16_t metrics_port = 0;
    std::string metrics_bind = "127.0.0.1";

    // Direct links
    std::uint16_t link_port = 0;  // TCP listen port; 0 = any free port
    // Listen address for links; "" = all interfaces. When set to a specific
    // address, that address is the only host candidate we announce.
    std::string link_bind;
    std::chrono::milliseconds keepalive_interval{15000};
    std::chrono::milliseconds keepalive_timeout{45000};
    std::chrono::milliseconds dial_timeout{5000};
    std::chrono::milliseconds reconnect_min{500};    // first retry after a failed dial
    std::chrono::milliseconds reconnect_max{60000};  // backoff cap

    // Offline delivery through the DHT inbox (docs/DESIGN.md "Inbox").
    // Without a link, queued messages go to the contact's inbox after
    // inbox_delay_offline when its presence says offline, or after
    // inbox_delay_online when it looks online (a link is probably coming).
    std::chrono::milliseconds inbox_delay_offline{100};
    std::chrono::milliseconds inbox_delay_online{3000};
    std::chrono::milliseconds inbox_ack_delay{300};  // batches acks and receipts sent through the inbox
    std::chrono::milliseconds inbox_refresh{
        240000};  // re-put of undelivered inbox values (stock nodes keep 10 min)
    std::chrono::hours inbox_retention{24 * 30};  // messages and requests are re-put this long at most
    std::chrono::hours receipt_retention{72};     // acks and read receipts: this long, or until a link

    // A fresh presence record (new timestamp) this often even when nothing
    // changed. Each one costs every watching buddy the whole signed record
    // from each storing node it listens at (about 4 x 0.7-1.2 KB), so it is
    // most of the idle traffic of a user with online buddies when short:
    // measured 70 KB/min per user with 10 buddies at 120 s (docs/SCALE.md).
    // OpenDHT keeps the record itself stored between publishes.
    std::chrono::seconds presence_refresh{1800};
    // A contact whose presence key showed no live record this long has its
    // DHT listen put to sleep ("dormant"): listening costs ~15 B/s per key,
    // which made 100 offline buddies cost 1.4 KB/s (docs/SCALE.md). A
    // dormant contact wakes when it knocks (a short-lived signal in our
    // inbox that every juiced sends to the live contacts it has no link
    // with), when a link forms, and on a poll (one DHT get) every
    // presence_poll. 0 s = always listen.
    std::chrono::seconds presence_dormant_after{600};

    // Links through NATs (docs/NAT.md): ICE (libnice) with candidates sent
    // in DHT signals; the TLS link runs over pseudo-TCP on the chosen path.
    // On by default. Off: links use the TCP candidates of presence records only. A peer
    // without the "ice" capability is dialled over TCP either way, and a
    // failed ICE attempt falls back to TCP.
    bool ice = true;
    std::string stun;  // "ip:port" of a STUN server ("" = none)
    std::string turn;  // "ip:port" of a TURN server (UDP; "" = none)
    std::string turn_user, turn_password;
    std::chrono::seconds ice_timeout{25};  // one attempt, offer to link open
    std::chrono::seconds presence_poll{7200};

    // Voice calls (docs/DESIGN.md "Calls").
    bool voice = true;  // advertise "voice" and accept calls
    // Audio for calls that give no WAV paths: "auto" and "pulse" use the
    // sound device through PulseAudio (without one such a call fails with
    // no_audio_device); "null" sends silence and discards what is heard.
    std::string audio = "auto";
    std::string audio_in, audio_out;  // daemon-wide default WAV files (headless use)
    std::uint16_t media_port = 0;     // UDP port for call media; 0 = a free port per call
    // "ip:port" contacts should send our call audio to (a port forward or a
    // relay); "" = the address of our link and media_port.
    std::string media_announce;
    int call_bitrate = 32000;  // Opus target with no loss, bit/s
    std::chrono::milliseconds ring_timeout{45000};
    std::chrono::milliseconds media_timeout{20000};  // an active call ends after this long without audio

    // Storage
    // normal: WAL without an fsync per commit; survives a crash of juiced
    // (kill -9) and costs ~0.2 ms a commit here. full: an fsync per commit
    // (~4 ms here), survives power loss too. See docs/DESIGN.md "Storage".
    Store::Sync sync = Store::Sync::normal;

    // Identity: the display name to use when none is stored yet.
    std::string default_name;

    static std::filesystem::path default_data_dir();
};

// The default public bootstrap node, used only when network == 0 and no
// bootstrap was given.
inline constexpr const char* k_default_bootstrap = "bootstrap.jami.net:4222";

}  // namespace juice::node
