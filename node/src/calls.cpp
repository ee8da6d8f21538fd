// Call signalling and the per-call media sessions; see calls.hpp.
#include "calls.hpp"

#include <spdlog/spdlog.h>

#include <asio/ip/address.hpp>

#include <algorithm>
#include <chrono>

namespace juice::node {

using json = nlohmann::json;
using namespace std::chrono;

namespace {

enum class call_errc {
    unknown_call = 1,
    busy,             // we are already in a call
    not_linked,       // no live link to the contact
    no_voice,         // the contact's juice does not do voice
    voice_disabled,   // ours does not (--no-voice)
    no_audio_device,  // no sound device and no WAV path
    bad_state,        // e.g. accepting a call we placed
    media_failed,     // socket, keys or codec
};

class CallCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "juice.call"; }
    std::string message(int ev) const override {
        switch (static_cast<call_errc>(ev)) {
            case call_errc::unknown_call:
                return "unknown_call";
            case call_errc::busy:
                return "busy";
            case call_errc::not_linked:
                return "not_linked";
            case call_errc::no_voice:
                return "no_voice";
            case call_errc::voice_disabled:
                return "voice_disabled";
            case call_errc::no_audio_device:
                return "no_audio_device";
            case call_errc::bad_state:
                return "bad_state";
            case call_errc::media_failed:
                return "media_failed";
        }
        return "call_error";
    }
};
const std::error_category& call_category() {
    static const CallCategory c;
    return c;
}
Error call_error(call_errc e, std::string msg) {
    return Error{{static_cast<int>(e), call_category()}, std::move(msg)};
}

std::int64_t now_ms() {
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

const char* state_name(int s) {
    static const char* names[] = {"ringing_out", "ringing_in", "active", "ended"};
    return names[s];
}

}  // namespace

std::optional<MediaAddress> parse_media_address(const std::string& text) {
    auto colon = text.rfind(':');
    if (colon == std::string::npos || colon + 1 >= text.size() || text.size() - colon > 6)
        return std::nullopt;
    std::string ip = text.substr(0, colon);
    if (ip.size() > 2 && ip.front() == '[' && ip.back() == ']') ip = ip.substr(1, ip.size() - 2);
    std::error_code ec;
    asio::ip::make_address(ip, ec);
    if (ec) return std::nullopt;
    unsigned long port = 0;
    for (char ch : text.substr(colon + 1)) {
        if (ch < '0' || ch > '9') return std::nullopt;
        port = port * 10 + static_cast<unsigned long>(ch - '0');
    }
    if (port == 0 || port > 65535) return std::nullopt;
    return MediaAddress{ip, static_cast<std::uint16_t>(port)};
}

api::RpcError call_rpc_error(const Error& e) {
    if (e.code.category() == call_category()) return api::RpcError::app(e.code.message(), e.message);
    return api::RpcError::app("call_failed", e.what());
}

struct CallManager::Call {
    enum State { ringing_out, ringing_in, active };
    MessageId id;
    UserId peer;
    State state = ringing_out;
    std::int64_t created_ms = now_ms(), answered_ms = 0;
    std::vector<MediaAddress> peer_media;  // from their offer
    std::optional<IceParams> peer_ice;     // from their offer, when the audio goes through ICE
    std::shared_ptr<ice::Session> ice;     // our side of it (outlives `media`, which sends through it)
    std::unique_ptr<media::MediaSession> media;
    std::optional<media::SessionOptions> pending;  // ICE: starts once a path is chosen
    std::unique_ptr<media::AudioSource> source;
    std::unique_ptr<media::AudioSink> sink;
    std::unique_ptr<asio::steady_timer> ring_timer;
};

CallManager::CallManager(asio::io_context& io, const Config& cfg, Host host)
    : m_io(io), m_cfg(cfg), m_host(std::move(host)) {}

CallManager::~CallManager() = default;

CallManager::Call* CallManager::find(const MessageId& id) {
    auto it = m_calls.find(id);
    return it == m_calls.end() ? nullptr : it->second.get();
}

void CallManager::publish_state(const Call& c, const std::string& reason) {
    json ev{{"type", "call.state"}, {"call_id", c.id.hex()}, {"peer", c.peer.hex()}};
    if (reason.empty()) {
        ev["state"] = state_name(c.state);
    } else {
        ev["state"] = "ended";
        ev["reason"] = reason;
    }
    m_host.publish(std::move(ev));
}

Result<void> CallManager::open_audio(Call& c, const AudioPaths& audio) {
    std::string in = audio.in.value_or(m_cfg.audio_in), out = audio.out.value_or(m_cfg.audio_out);
    const std::string& backend = m_cfg.audio;
    auto no_device = [](const Error& e) {
        return call_error(
            call_errc::no_audio_device,
            e.what() + " (pass audio_in/audio_out WAV paths, or start juiced with --audio null)");
    };
    if (!in.empty()) {
        auto s = media::open_wav_source(in);
        if (!s) return call_error(call_errc::no_audio_device, "audio_in: " + s.error().what());
        c.source = std::move(*s);
    } else if (backend == "null") {
        c.source = media::make_null_source();
    } else {
        auto s = media::open_pulse_source("juice");
        if (!s) return no_device(s.error());
        c.source = std::move(*s);
    }
    if (!out.empty()) {
        auto s = media::open_wav_sink(out);
        if (!s) return call_error(call_errc::no_audio_device, "audio_out: " + s.error().what());
        c.sink = std::move(*s);
    } else if (backend == "null") {
        c.sink = media::make_null_sink();
    } else {
        auto s = media::open_pulse_sink("juice");
        if (!s) return no_device(s.error());
        c.sink = std::move(*s);
    }
    return {};
}

std::vector<MediaAddress> CallManager::our_media(const Call& c) const {
    if (auto a = parse_media_address(m_cfg.media_announce)) return {*a};
    // "": the address our link comes from, which the peer knows.
    return {{"", c.media->local_port()}};
}

namespace {

// The first of the peer's media addresses we can use ("" is the link's peer address).
Result<asio::ip::udp::endpoint> pick_media_address(Link& link, const std::vector<MediaAddress>& peer_media) {
    if (peer_media.empty()) return call_error(call_errc::media_failed, "the peer sent no media address");
    for (const auto& m : peer_media) {
        std::error_code ec;
        auto addr = m.ip.empty() ? link.remote_address() : asio::ip::make_address(m.ip, ec);
        if (ec || addr.is_unspecified()) continue;
        if (addr.is_v6() && addr.to_v6().is_v4_mapped())
            addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
        return asio::ip::udp::endpoint(addr, m.port);
    }
    return call_error(call_errc::media_failed, "none of the peer's media addresses is usable");
}

}  // namespace

void CallManager::open_ice(Call& c, bool controlling) {
    ice::Session::Events ev;
    const MessageId id = c.id;
    ev.on_gathered = [this, id](ice::Description d) { on_ice_gathered(id, d); };
    ev.on_state = [this, id](ice::State st) {
        if (st == ice::State::failed) end(id, "no_path", true);
    };
    ev.on_selected = [this, id](const LinkPath& p) {
        spdlog::info("call {}: audio over {} ({} -> {})", id.hex().substr(0, 8), p.kind, p.local, p.remote);
        Call* call = find(id);
        if (!call || !call->pending) return;
        // Nothing was sent into the void while the checks ran: the first
        // word of the call is heard.
        auto o = std::move(*call->pending);
        call->pending.reset();
        if (auto r = call->media->start(std::move(o)); !r) {
            spdlog::warn("call {}: {}", id.hex().substr(0, 8), r.error().what());
            end(id, "media_failed", true);
        }
    };
    c.ice = m_host.ice_session(controlling, std::move(ev));
    c.media = media::MediaSession::over(std::make_shared<ice::IcePort>(c.ice));
}

// Our candidates are in: the caller offers; the callee (who has accepted)
// answers and starts its checks.
void CallManager::on_ice_gathered(const MessageId& id, const ice::Description& d) {
    Call* c = find(id);
    if (!c) return;
    auto link = m_host.link_to(c->peer);
    if (!link) return end(id, "link_lost", false);
    auto params = ice::to_params(d);
    if (params.candidates.empty()) {
        spdlog::warn("call {}: no ICE candidate for the audio", id.hex().substr(0, 8));
        return end(id, "no_candidates", true);
    }
    if (c->state == Call::ringing_out) {
        link->send(CallFrame{id, CallFrame::Op::offer, {}, {}, std::move(params)});
    } else if (c->peer_ice) {
        c->ice->set_remote(ice::from_params(*c->peer_ice));
        link->send(CallFrame{id, CallFrame::Op::accept, {}, {}, std::move(params)});
    }
}

Result<void> CallManager::start_media(Call& c, Link& link, const std::vector<MediaAddress>& peer_media) {
    std::optional<asio::ip::udp::endpoint> remote;
    if (!c.ice) {
        if (auto r = pick_media_address(link, peer_media); !r)
            return r.error();
        else
            remote = *r;
    }
    auto keys = link.export_keying_material(media::k_srtp_exporter_label, media::k_srtp_keying_bytes,
                                            std::span(c.id.bytes.data(), c.id.bytes.size()));
    if (!keys) return call_error(call_errc::media_failed, "call keys: " + keys.error().what());
    media::SessionOptions o;
    o.tls_client = link.outgoing();
    o.keying_material = std::move(*keys);
    if (remote) o.remote = *remote;
    o.source = std::move(c.source);
    o.sink = std::move(c.sink);
    o.bitrate = m_cfg.call_bitrate;
    if (c.ice && !c.ice->selected())
        c.pending = std::move(o);
    else if (auto r = c.media->start(std::move(o)); !r)
        return call_error(call_errc::media_failed, r.error().what());
    c.state = Call::active;
    c.answered_ms = now_ms();
    c.ring_timer.reset();
    if (remote)
        spdlog::info("call {} with {} active: media to {}:{}", c.id.hex().substr(0, 8),
                     c.peer.hex().substr(0, 8), remote->address().to_string(), remote->port());
    else
        spdlog::info("call {} with {} active: media through ICE", c.id.hex().substr(0, 8),
                     c.peer.hex().substr(0, 8));
    return {};
}

Result<MessageId> CallManager::start(const UserId& to, const AudioPaths& audio) {
    if (!m_cfg.voice)
        return call_error(call_errc::voice_disabled, "voice calls are turned off (juiced --no-voice)");
    auto link = m_host.link_to(to);
    if (!link)
        return call_error(call_errc::not_linked, "the contact is not connected; calls need a live link");
    auto caps = m_host.caps_of(to);
    if (std::find(caps.begin(), caps.end(), "voice") == caps.end())
        return call_error(call_errc::no_voice, "the contact's juice does not support voice calls");
    if (!m_calls.empty()) return call_error(call_errc::busy, "you are already in a call; hang up first");
    auto c = std::make_unique<Call>();
    c->id = MessageId::random();
    c->peer = to;
    c->state = Call::ringing_out;
    if (auto r = open_audio(*c, audio); !r) return r.error();
    // Through a NAT (the link runs over ICE) the audio needs ICE too: the
    // offer goes out once our candidates are gathered.
    if (m_host.ice_session && link->path().kind != "tcp" &&
        std::find(caps.begin(), caps.end(), "ice") != caps.end()) {
        open_ice(*c, true);
    } else {
        auto m = media::MediaSession::bind(m_cfg.link_bind, m_cfg.media_port);
        if (!m) return call_error(call_errc::media_failed, m.error().what());
        c->media = std::move(*m);
        link->send(CallFrame{c->id, CallFrame::Op::offer, our_media(*c), {}});
    }
    MessageId id = c->id;
    c->ring_timer = std::make_unique<asio::steady_timer>(m_io, m_cfg.ring_timeout);
    c->ring_timer->async_wait([this, id](std::error_code ec) {
        if (!ec) end(id, "timeout", true);
    });
    auto& ref = *c;
    m_calls.emplace(id, std::move(c));
    publish_state(ref);
    spdlog::info("calling {} (call {})", to.hex().substr(0, 8), id.hex().substr(0, 8));
    return id;
}

Result<void> CallManager::accept(const MessageId& id, const AudioPaths& audio) {
    Call* c = find(id);
    if (!c) return call_error(call_errc::unknown_call, "no such call");
    if (c->state != Call::ringing_in)
        return call_error(call_errc::bad_state, "only a ringing incoming call can be accepted");
    auto link = m_host.link_to(c->peer);
    if (!link) {
        end(id, "link_lost", false);
        return call_error(call_errc::not_linked, "the caller is no longer connected");
    }
    if (auto r = open_audio(*c, audio); !r) {
        end(id, "no_audio_device", true);
        return r;
    }
    if (c->peer_ice) {
        if (!m_host.ice_session) {
            end(id, "unsupported", true);
            return call_error(call_errc::media_failed,
                              "the caller's audio needs ICE, which is off here (juiced --ice on)");
        }
        open_ice(*c, false);  // our accept goes out once our candidates are gathered
    } else {
        auto m = media::MediaSession::bind(m_cfg.link_bind, m_cfg.media_port);
        if (!m) {
            end(id, "media_failed", true);
            return call_error(call_errc::media_failed, m.error().what());
        }
        c->media = std::move(*m);
    }
    if (auto r = start_media(*c, *link, c->peer_media); !r) {
        end(id, "media_failed", true);
        return r;
    }
    if (!c->ice) link->send(CallFrame{c->id, CallFrame::Op::accept, our_media(*c), {}});
    publish_state(*c);
    return {};
}

Result<void> CallManager::reject(const MessageId& id) {
    Call* c = find(id);
    if (!c) return call_error(call_errc::unknown_call, "no such call");
    if (c->state != Call::ringing_in)
        return call_error(call_errc::bad_state,
                          "only a ringing incoming call can be rejected; use calls.hangup");
    end(id, "rejected", true);
    return {};
}

Result<void> CallManager::hangup(const MessageId& id) {
    Call* c = find(id);
    if (!c) return call_error(call_errc::unknown_call, "no such call");
    end(id, c->state == Call::ringing_in ? "rejected" : "hangup", true);
    return {};
}

void CallManager::end(const MessageId& id, const std::string& reason, bool tell_peer) {
    auto it = m_calls.find(id);
    if (it == m_calls.end()) return;
    auto c = std::move(it->second);
    m_calls.erase(it);
    if (tell_peer)
        if (auto link = m_host.link_to(c->peer)) link->send(CallFrame{c->id, CallFrame::Op::end, {}, reason});
    if (c->media) {
        auto st = c->media->stats();
        c->media->stop();
        spdlog::info("call {} ended ({}): {} packets sent, {} received, loss in {:.1f}%, out {:.1f}%",
                     id.hex().substr(0, 8), reason, st.packets_sent, st.packets_received, st.loss_in * 100,
                     st.loss_out * 100);
    } else {
        spdlog::info("call {} ended ({})", id.hex().substr(0, 8), reason);
    }
    if (c->ice) c->ice->close();  // releases its TURN allocation
    publish_state(*c, reason);
}

void CallManager::on_frame(const UserId& from, Link& link, const CallFrame& f) {
    Call* c = find(f.id);
    if (c && c->peer != from) return;  // not theirs: ignore
    switch (f.op) {
        case CallFrame::Op::offer: {
            if (c) return;  // a repeat
            auto refuse = [&](const char* reason) {
                link.send(CallFrame{f.id, CallFrame::Op::end, {}, reason});
                spdlog::info("refused a call from {}: {}", from.hex().substr(0, 8), reason);
            };
            if (!m_cfg.voice) return refuse("unsupported");
            if (!m_calls.empty()) return refuse("busy");
            auto call = std::make_unique<Call>();
            call->id = f.id;
            call->peer = from;
            call->state = Call::ringing_in;
            call->peer_media = f.media;
            call->peer_ice = f.ice;
            MessageId id = f.id;
            call->ring_timer = std::make_unique<asio::steady_timer>(m_io, m_cfg.ring_timeout);
            call->ring_timer->async_wait([this, id](std::error_code ec) {
                if (!ec) end(id, "timeout", true);
            });
            auto& ref = *call;
            m_calls.emplace(id, std::move(call));
            publish_state(ref);
            return;
        }
        case CallFrame::Op::accept: {
            if (!c || c->state != Call::ringing_out || !c->media) return;
            if (c->ice) {
                if (!f.ice) {
                    spdlog::warn("call {}: the accept has no ICE parameters", f.id.hex().substr(0, 8));
                    return end(f.id, "media_failed", true);
                }
                c->ice->set_remote(ice::from_params(*f.ice));
            }
            if (auto r = start_media(*c, link, f.media); !r) {
                spdlog::warn("call {}: {}", f.id.hex().substr(0, 8), r.error().what());
                return end(f.id, "media_failed", true);
            }
            publish_state(*c);
            return;
        }
        case CallFrame::Op::end:
            if (c) end(f.id, f.reason.empty() ? "hangup" : f.reason, false);
            return;
    }
}

void CallManager::on_link_down(const UserId& peer) {
    std::vector<MessageId> gone;
    for (auto& [id, c] : m_calls)
        if (c->peer == peer) gone.push_back(id);
    for (auto& id : gone) end(id, "link_lost", false);
}

void CallManager::tick() {
    std::vector<std::pair<MessageId, std::string>> gone;
    for (auto& [id, c] : m_calls) {
        if (c->state != Call::active || !c->media) continue;
        auto st = c->media->stats();
        if (!st.audio_failure.empty()) {
            spdlog::warn("call {}: audio device failed: {}", id.hex().substr(0, 8), st.audio_failure);
            gone.emplace_back(id, "audio_failed");
            continue;
        }
        auto silent =
            st.ms_since_rx >= 0 ? milliseconds(st.ms_since_rx) : milliseconds(now_ms() - c->answered_ms);
        if (silent > m_cfg.media_timeout) gone.emplace_back(id, "no_media");
    }
    for (auto& [id, why] : gone) end(id, why, true);
}

void CallManager::shutdown() {
    std::vector<MessageId> all;
    for (auto& [id, c] : m_calls) all.push_back(id);
    for (auto& id : all) end(id, "shutdown", true);
}

json CallManager::list() const {
    json out = json::array();
    for (const auto& [id, c] : m_calls) {
        json s = json::object();
        if (c->media && c->state == Call::active) {
            auto st = c->media->stats();
            s = {{"packets_sent", st.packets_sent},
                 {"packets_received", st.packets_received},
                 {"bytes_sent", st.bytes_sent},
                 {"bytes_received", st.bytes_received},
                 {"loss_in", st.loss_in},
                 {"loss_out", st.loss_out},
                 {"jitter_ms", st.jitter_ms},
                 {"peer_jitter_ms", st.peer_jitter_ms},
                 {"buffer_ms", st.buffer_ms},
                 {"rtt_ms", st.rtt_ms},
                 {"bitrate", st.bitrate},
                 {"expected_loss", st.expected_loss},
                 {"frames_decoded", st.frames_decoded},
                 {"frames_recovered", st.frames_recovered},
                 {"frames_concealed", st.frames_concealed},
                 {"rejected", st.rejected},
                 {"remote", st.remote},
                 {"path", "udp"},
                 {"source_ended", st.source_ended}};
            if (c->ice) {  // where the audio goes through NATs
                const auto& p = c->ice->selected();
                s["path"] = p ? p->kind : "checking";
                s["remote"] = p ? p->remote : "";
                if (p && !p->relay.empty()) s["relay"] = p->relay;
            }
        }
        out.push_back({{"call_id", id.hex()},
                       {"peer", c->peer.hex()},
                       {"state", state_name(c->state)},
                       {"started", c->created_ms},
                       {"answered", c->answered_ms},
                       {"stats", std::move(s)}});
    }
    return out;
}

}  // namespace juice::node
