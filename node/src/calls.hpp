// Calls: signalling over the TLS link (CallFrame), media through a
// media::MediaSession per call. When the link itself runs through ICE (a
// NAT is in the way), the audio gets an ICE session of its own (datagrams,
// a direct pair or a TURN relay), negotiated in the offer and accept; over a
// TCP link it goes to the UDP port the peer names, as before. One call at a time: a second offer while a
// call rings or runs is answered "busy".
//
// States, as the API reports them in `call.state` events:
//   ringing_out -> active -> ended      (we called; they accepted)
//   ringing_in  -> active -> ended      (they called; we accepted)
//   ringing_*   -> ended                (rejected, busy, timeout, hangup...)
// `ended` carries a reason: hangup, rejected, busy, timeout, link_lost,
// no_audio_device, unsupported, no_media (nothing heard for media_timeout),
// audio_failed (the sound device went away), shutdown.
//
// Loop thread only; each call's media runs on its own thread.
#pragma once

#include "ice/ice.hpp"
#include "juice/node/api.hpp"
#include "juice/node/config.hpp"
#include "juice/node/frame.hpp"
#include "juice/node/media/session.hpp"
#include "link.hpp"

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

#include <functional>
#include <map>
#include <memory>
#include <optional>

namespace juice::node {

class CallManager {
public:
    struct Host {
        // The open link to a contact we may call (mutual), or null.
        std::function<std::shared_ptr<Link>(const UserId&)> link_to;
        std::function<std::vector<std::string>(const UserId&)> caps_of;
        std::function<void(nlohmann::json event)> publish;
        // A datagram ICE session for a call's audio; unset when ICE is off.
        std::function<std::shared_ptr<ice::Session>(bool controlling, ice::Session::Events)> ice_session;
    };
    CallManager(asio::io_context& io, const Config& cfg, Host host);
    ~CallManager();

    struct AudioPaths {
        std::optional<std::string> in, out;  // WAV paths; unset: the daemon's default
    };
    // API: each returns the error to report, if any.
    Result<MessageId> start(const UserId& to, const AudioPaths& audio);
    Result<void> accept(const MessageId& id, const AudioPaths& audio);
    Result<void> reject(const MessageId& id);
    Result<void> hangup(const MessageId& id);
    nlohmann::json list() const;

    void on_frame(const UserId& from, Link& link, const CallFrame& frame);
    // The link to `peer` went down, or the contact was removed: its calls end.
    void on_link_down(const UserId& peer);
    // Every second: ends calls whose media went silent or whose device failed.
    void tick();
    // Ends every call (reason "shutdown"), telling the peers.
    void shutdown();

private:
    struct Call;
    void end(const MessageId& id, const std::string& reason, bool tell_peer);
    void publish_state(const Call& c, const std::string& reason = {});
    Result<void> open_audio(Call& c, const AudioPaths& audio);
    Result<void> start_media(Call& c, Link& link, const std::vector<MediaAddress>& peer_media);
    void open_ice(Call& c, bool controlling);
    void on_ice_gathered(const MessageId& id, const ice::Description& d);
    std::vector<MediaAddress> our_media(const Call& c) const;
    Call* find(const MessageId& id);

    asio::io_context& m_io;
    const Config& m_cfg;
    Host m_host;
    std::map<MessageId, std::unique_ptr<Call>> m_calls;
};

// "ip:port" or "[v6]:port" for --media-announce; nullopt if malformed.
std::optional<MediaAddress> parse_media_address(const std::string& text);

// The RPC error for a failed call operation (reason string from the message's
// error category: "no_audio_device", "busy", "not_linked", ...).
api::RpcError call_rpc_error(const Error& e);

}  // namespace juice::node
