// Daemon: the core of juiced. Owns the event loop and all state: identity,
// store, DHT node, links to contacts, and the local API server.
//
// Threading: run() runs the asio loop on the calling thread; every piece of
// state is touched only there. OpenDHT callbacks are posted onto the loop by
// DhtNode. request_shutdown() may be called from any thread.
#pragma once

#include "juice/crypto/identity.hpp"
#include "juice/node/config.hpp"

#include <memory>

namespace juice::node {

inline constexpr const char* k_version = "0.1.0";

class Daemon {
public:
    Daemon(Config config, crypto::Identity identity);
    ~Daemon();

    // Opens the store, starts the API server, the link listener and the DHT
    // node, and publishes presence. Errors are user-readable (e.g. another
    // daemon on the socket, database damaged, port in use).
    Result<void> start();

    // Runs the loop until shutdown (SIGINT/SIGTERM, daemon.shutdown, or
    // request_shutdown()). On the way out: bye to every linked contact, an
    // offline presence record, node cache saved.
    void run();

    // Thread-safe.
    void request_shutdown();

    struct Impl;

private:
    std::unique_ptr<Impl> m_impl;
};

}  // namespace juice::node
