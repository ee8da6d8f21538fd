#include "transport.hpp"

#include <asio/write.hpp>

namespace juice::node {

TcpStream::TcpStream(asio::ip::tcp::socket socket) : m_socket(std::move(socket)) {
    std::error_code ec;
    auto ep = m_socket.remote_endpoint(ec);
    m_remote = ec ? std::string("?") : ep.address().to_string() + ":" + std::to_string(ep.port());
    if (!ec) m_remote_address = ep.address();
    auto local = m_socket.local_endpoint(ec);
    if (!ec) {
        m_local_address = local.address();
        m_path.local = local.address().to_string() + ":" + std::to_string(local.port());
    }
    m_path.remote = m_remote;
    m_socket.set_option(asio::ip::tcp::no_delay(true), ec);
}

void TcpStream::start(Handlers h) {
    m_h = std::move(h);
    read_more();
}

void TcpStream::read_more() {
    if (m_closed) return;
    m_socket.async_read_some(
        asio::buffer(m_rbuf), [self = shared_from_this()](std::error_code ec, std::size_t n) {
            if (self->m_closed) return;
            if (ec)
                return self->fail(ec == asio::error::eof ? "connection closed by peer"
                                                         : "read failed: " + ec.message());
            // The handler may close us, which clears m_h: call a copy.
            if (auto cb = self->m_h.on_bytes) cb(std::span<const std::uint8_t>(self->m_rbuf.data(), n));
            self->read_more();
        });
}

void TcpStream::write(std::span<const std::uint8_t> bytes) {
    if (m_closed || bytes.empty()) return;
    m_pending.insert(m_pending.end(), bytes.begin(), bytes.end());
    flush();
}

void TcpStream::flush() {
    if (m_writing) return;
    if (m_pending.empty()) {
        if (m_close_after_flush) {
            std::error_code ec;
            m_socket.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
            m_socket.close(ec);
        }
        return;
    }
    m_writing = true;
    m_flight.swap(m_pending);
    asio::async_write(m_socket, asio::buffer(m_flight),
                      [self = shared_from_this()](std::error_code ec, std::size_t) {
                          self->m_writing = false;
                          self->m_flight.clear();
                          if (ec) {
                              if (self->m_close_after_flush) {
                                  self->m_pending.clear();
                                  std::error_code ignored;
                                  self->m_socket.close(ignored);
                              } else if (!self->m_closed) {
                                  self->fail("write failed: " + ec.message());
                              }
                              return;
                          }
                          self->flush();
                      });
}

void TcpStream::close_after_flush() {
    if (m_close_after_flush) return;
    m_closed = true;
    m_close_after_flush = true;
    m_h = {};
    flush();
}

void TcpStream::close() {
    if (m_close_after_flush) return;  // already finishing its writes
    m_h = {};
    m_pending.clear();
    m_closed = true;
    std::error_code ec;
    m_socket.close(ec);
}

void TcpStream::fail(const std::string& reason) {
    if (m_closed) return;
    m_closed = true;
    std::error_code ec;
    m_socket.close(ec);
    auto h = std::move(m_h);
    m_h = {};
    if (h.on_error) h.on_error(reason);
}

}  // namespace juice::node
