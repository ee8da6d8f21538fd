// What kind of NAT are we behind? RFC 5780's mapping tests, from one UDP
// socket, against a STUN server (libnice's STUN message code; the socket is
// ours). `juice doctor` shows the answer (node.nat in docs/API.md).
//
//   test I    the server's address          -> mapped address M1
//   test II   its other IP, same port       -> M2; M2 == M1: endpoint-independent
//   test III  its other IP and other port   -> M3; M3 == M2: address-dependent,
//                                              else address-and-port-dependent
// The other address is the server's OTHER-ADDRESS attribute: coturn sends
// it when it listens on two IPs. A server without it cannot tell the mapping
// apart; a second configured server (TURN beside STUN) stands in for test II.
#pragma once

#include "ice.hpp"

#include <optional>
#include <string>
#include <vector>

namespace juice::node::ice {

struct StunTest {
    std::string server;  // ip:port asked
    std::string mapped;  // ip:port it saw us at; empty when it did not answer
};

struct NatProbe {
    std::string local;                   // the probe socket, ip:port (ip 0.0.0.0 when unbound)
    std::vector<StunTest> tests;         // in the order they ran
    std::string other_address;           // the first server's OTHER-ADDRESS, if any
    std::string mapping;                 // "none" (a public address), "endpoint-independent",
                                         // "address-dependent", "address-and-port-dependent",
                                         // "endpoint-dependent" (two servers disagree), "unknown"
    std::optional<bool> port_preserved;  // the NAT kept our port
    std::string error;                   // why the mapping is unknown
};

// Blocking: about 1.5 s per server that does not answer, well under 10 s in
// all. `bind_ip` empty binds every address. Servers are numeric IPv4.
NatProbe probe_nat(const std::string& bind_ip, const std::vector<Server>& servers);

}  // namespace juice::node::ice
