// ByteStream: the reliable, ordered byte transport a Link runs TLS over.
//
// Today's transport is a TCP socket (TcpStream); an ICE session's
// pseudo-TCP stream is another (docs/NAT.md). Everything runs on the
// daemon's loop thread: handlers are called there, and never from inside
// write() or close().
#pragma once

#include "juice/crypto/ids.hpp"

#include <asio/ip/tcp.hpp>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

namespace juice::node {

// Which network path a link took, for `link` events and node.info.
struct LinkPath {
    std::string kind = "tcp";   // "tcp" | "host" | "srflx" | "prflx" | "relay"
    std::string local, remote;  // "ip:port" of each end of the path
    std::string relay;          // the relay's "ip:port" when kind == "relay"
};

class ByteStream {
public:
    struct Handlers {
        std::function<void(std::span<const std::uint8_t>)> on_bytes;
        std::function<void(const std::string& reason)> on_error;  // once; then nothing more
    };
    virtual ~ByteStream() = default;

    // Starts delivering received bytes to `h`.
    virtual void start(Handlers h) = 0;
    // Queues bytes to send, in order.
    virtual void write(std::span<const std::uint8_t> bytes) = 0;
    // Sends what is queued, then closes; no handler is called any more.
    virtual void close_after_flush() = 0;
    // Closes now, dropping what is queued; no handler is called any more.
    virtual void close() = 0;
    // Bytes accepted by write() and not yet handed to the network.
    virtual std::size_t queued_bytes() const = 0;

    virtual std::string remote_endpoint() const = 0;  // "ip:port", "?" if unknown
    virtual const asio::ip::address& remote_address() const = 0;
    virtual const asio::ip::address& local_address() const = 0;
    virtual LinkPath path() const = 0;
};

// A connected TCP socket. Shared so that a pending write keeps it alive
// after its owner let go (close_after_flush).
class TcpStream final : public ByteStream, public std::enable_shared_from_this<TcpStream> {
public:
    explicit TcpStream(asio::ip::tcp::socket socket);

    void start(Handlers h) override;
    void write(std::span<const std::uint8_t> bytes) override;
    void close_after_flush() override;
    void close() override;
    std::size_t queued_bytes() const override { return m_pending.size() + m_flight.size(); }

    std::string remote_endpoint() const override { return m_remote; }
    const asio::ip::address& remote_address() const override { return m_remote_address; }
    const asio::ip::address& local_address() const override { return m_local_address; }
    LinkPath path() const override { return m_path; }

private:
    void read_more();
    void flush();
    void fail(const std::string& reason);

    asio::ip::tcp::socket m_socket;
    Handlers m_h;
    std::array<std::uint8_t, 16384> m_rbuf{};
    Bytes m_pending;  // waiting for the current write to finish
    Bytes m_flight;   // being written
    bool m_writing = false;
    bool m_closed = false;  // no more handler calls
    bool m_close_after_flush = false;
    std::string m_remote;
    asio::ip::address m_remote_address, m_local_address;
    LinkPath m_path;
};

}  // namespace juice::node
