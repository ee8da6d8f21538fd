// Link frames: 4-byte big-endian length, then a msgpack map.
//
// Keys (version 1). Every frame has
//   t  str   frame type (<= 32 bytes)
//   v  uint  frame format version, 1. Compatible additions (new keys, new
//            types) keep v = 1; v is raised only for a change a v1 reader
//            cannot follow, which it reports as frame_errc::unsupported.
// then, per type ("req" = required, else optional with the default shown):
//   "hello"     p  uint32  protocol (req)
//               n  str     display name, <= 64 bytes ("")
//               c  array   capabilities, <= 16 str of <= 16 bytes ([])
//               s  str     status, <= 16 bytes ("")
//               nt str     note, <= 256 bytes ("")
//   "msg"       i  bin 16  message id (req)
//               ts int     sender's clock, Unix ms, int64 (req)
//               b  str     body, <= 64 KiB (req)
//   "ack"       i  bin 16  id of the stored message (req)
//   "presence"  s  str     status, <= 16 bytes (req)
//               nt str     note, <= 256 bytes ("")
//   "ka"        r  bool    false: ping wanting a reply, true: the reply (false)
//   "bye"       r  str     reason, <= 64 bytes ("")
//   "req"       n  str     requester's name, <= 64 bytes ("")
//               m  str     request message, <= 1024 bytes ("")
//               ts int     when the request was made, Unix ms (req)
//   "ans"       a  bool    true: accepted, false: declined (req)
//   "rcpt"      i  array   1..512 message ids (bin 16) the reader has read (req)
//   "typ"       y  bool    typing (req)
//   "call"      i  bin 16  call id (req)
//               o  str     "offer", "accept" or "end" (req)
//               m  array   media addresses: 1..4 arrays [ip str <= 45 bytes
//                          ("" = the link's peer address), port uint 1..65535]
//                          (req for offer and accept, else ignored)
//               r  str     reason, <= 32 bytes ("")
//   "ice"       s  bin 16  attempt id (req)
//               o  str     "offer", "answer" or "end" (req)
//               ts int     sender's clock, Unix ms (req)
//               u  str     ICE ufrag, 4..32 ICE chars (req unless end)
//               p  str     ICE pwd, 22..64 ICE chars (req unless end)
//               c  array   1..24 candidates [foundation str <= 32, priority
//                          uint32, type "host"|"srflx"|"prflx"|"relay", ip str
//                          <= 45 bytes, port uint 1..65535] (req unless end)
//               r  str     reason, <= 32 bytes ("")
// All strings must be valid UTF-8. Unknown keys are ignored; a known key given
// twice, or with the wrong type or size, makes the frame malformed. An
// unknown "t" decodes to UnknownFrame. node/README.md carries the same table.
//
// Decoding never throws: msgpack exceptions are caught, and a pre-pass bounds
// the element counts that msgpack-c would otherwise allocate up front (an
// array header may claim 2^32 elements in 5 bytes).
#include "juice/node/frame.hpp"

#include "juice/crypto/text.hpp"

#include <msgpack.hpp>

#include <algorithm>
#include <limits>
#include <string_view>

namespace juice::node {

namespace {

constexpr std::uint64_t k_version = 1;
constexpr std::size_t k_max_type_bytes = 32;
constexpr std::size_t k_max_status_bytes = 16;
constexpr std::size_t k_max_caps = 16;
constexpr std::size_t k_max_cap_bytes = 16;
constexpr std::size_t k_max_reason_bytes = 64;
constexpr std::size_t k_max_depth = 8;
constexpr std::size_t k_max_ip_bytes = 45;  // the longest textual IPv6 address

class FrameCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "juice.frame"; }
    std::string message(int ev) const override {
        switch (static_cast<frame_errc>(ev)) {
            case frame_errc::oversized:
                return "the peer sent a frame of zero or too large a size";
            case frame_errc::malformed:
                return "the peer sent a malformed frame";
            case frame_errc::unsupported:
                return "the peer sent a frame of a newer, unsupported format";
        }
        return "unknown frame error " + std::to_string(ev);
    }
};

Error malformed(const std::string& what) {
    return make_error(frame_errc::malformed, "malformed frame: " + what);
}

// ---- encoding ----------------------------------------------------------------

using Packer = msgpack::packer<msgpack::sbuffer>;

void put_str(Packer& pk, std::string_view s) {
    pk.pack_str(static_cast<std::uint32_t>(s.size()));
    pk.pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
}

void put_header(Packer& pk, std::uint32_t fields, std::string_view type) {
    pk.pack_map(fields + 2);
    put_str(pk, "t");
    put_str(pk, type);
    put_str(pk, "v");
    pk.pack_uint64(k_version);
}

void put_id(Packer& pk, const MessageId& id) {
    pk.pack_bin(static_cast<std::uint32_t>(id.bytes.size()));
    pk.pack_bin_body(reinterpret_cast<const char*>(id.bytes.data()),
                     static_cast<std::uint32_t>(id.bytes.size()));
}

void put_bool(Packer& pk, bool b) {
    if (b)
        pk.pack_true();
    else
        pk.pack_false();
}

bool str_ok(std::string_view s, std::size_t max) {
    return s.size() <= max && valid_utf8(s);
}

// ICE ufrag/pwd characters (RFC 8445 15.4: ALPHA / DIGIT / "+" / "/").
bool ice_chars(std::string_view s, std::size_t min, std::size_t max) {
    if (s.size() < min || s.size() > max) return false;
    return std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' ||
               c == '/';
    });
}

bool candidate_ok(const IceCandidateInfo& c) {
    return !c.foundation.empty() && c.foundation.size() <= 32 && valid_utf8(c.foundation) &&
           (c.type == "host" || c.type == "srflx" || c.type == "prflx" || c.type == "relay") &&
           !c.ip.empty() && c.ip.size() <= k_max_ip_bytes && valid_utf8(c.ip) && c.port != 0;
}

bool ice_params_ok(const std::string& ufrag, const std::string& pwd,
                   const std::vector<IceCandidateInfo>& cands) {
    if (!ice_chars(ufrag, 4, 32) || !ice_chars(pwd, 22, 64)) return false;
    if (cands.empty() || cands.size() > k_max_ice_candidates) return false;
    return std::all_of(cands.begin(), cands.end(), candidate_ok);
}

// Encodes a frame that passes the decoder's checks, or returns false.
struct Encoder {
    Packer& pk;

    bool operator()(const HelloFrame& f) const {
        if (!str_ok(f.name, k_max_name_bytes) || !str_ok(f.status, k_max_status_bytes) ||
            !str_ok(f.note, k_max_note_bytes) || f.caps.size() > k_max_caps)
            return false;
        for (const auto& cap : f.caps)
            if (!str_ok(cap, k_max_cap_bytes)) return false;
        put_header(pk, 5, "hello");
        put_str(pk, "p");
        pk.pack_uint32(f.protocol);
        put_str(pk, "n");
        put_str(pk, f.name);
        put_str(pk, "c");
        pk.pack_array(static_cast<std::uint32_t>(f.caps.size()));
        for (const auto& cap : f.caps) put_str(pk, cap);
        put_str(pk, "s");
        put_str(pk, f.status);
        put_str(pk, "nt");
        put_str(pk, f.note);
        return true;
    }
    bool operator()(const MessageFrame& f) const {
        if (!str_ok(f.text, k_max_text_bytes)) return false;
        put_header(pk, 3, "msg");
        put_str(pk, "i");
        put_id(pk, f.id);
        put_str(pk, "ts");
        pk.pack_int64(f.ts);
        put_str(pk, "b");
        put_str(pk, f.text);
        return true;
    }
    bool operator()(const AckFrame& f) const {
        put_header(pk, 1, "ack");
        put_str(pk, "i");
        put_id(pk, f.id);
        return true;
    }
    bool operator()(const PresenceFrame& f) const {
        if (!str_ok(f.status, k_max_status_bytes) || !str_ok(f.note, k_max_note_bytes)) return false;
        put_header(pk, 2, "presence");
        put_str(pk, "s");
        put_str(pk, f.status);
        put_str(pk, "nt");
        put_str(pk, f.note);
        return true;
    }
    bool operator()(const KeepaliveFrame& f) const {
        put_header(pk, 1, "ka");
        put_str(pk, "r");
        put_bool(pk, f.reply);
        return true;
    }
    bool operator()(const ByeFrame& f) const {
        if (!str_ok(f.reason, k_max_reason_bytes)) return false;
        put_header(pk, 1, "bye");
        put_str(pk, "r");
        put_str(pk, f.reason);
        return true;
    }
    bool operator()(const RequestFrame& f) const {
        if (!str_ok(f.name, k_max_name_bytes) || !str_ok(f.message, k_max_request_bytes)) return false;
        put_header(pk, 3, "req");
        put_str(pk, "n");
        put_str(pk, f.name);
        put_str(pk, "m");
        put_str(pk, f.message);
        put_str(pk, "ts");
        pk.pack_int64(f.ts);
        return true;
    }
    bool operator()(const AnswerFrame& f) const {
        put_header(pk, 1, "ans");
        put_str(pk, "a");
        put_bool(pk, f.accept);
        return true;
    }
    bool operator()(const ReceiptFrame& f) const {
        if (f.ids.empty() || f.ids.size() > k_max_receipt_ids) return false;
        put_header(pk, 1, "rcpt");
        put_str(pk, "i");
        pk.pack_array(static_cast<std::uint32_t>(f.ids.size()));
        for (const auto& id : f.ids) put_id(pk, id);
        return true;
    }
    bool operator()(const TypingFrame& f) const {
        put_header(pk, 1, "typ");
        put_str(pk, "y");
        put_bool(pk, f.typing);
        return true;
    }
    void put_ice_params(const std::string& ufrag, const std::string& pwd,
                        const std::vector<IceCandidateInfo>& cands) const {
        put_str(pk, "u");
        put_str(pk, ufrag);
        put_str(pk, "p");
        put_str(pk, pwd);
        put_str(pk, "c");
        pk.pack_array(static_cast<std::uint32_t>(cands.size()));
        for (const auto& c : cands) {
            pk.pack_array(5);
            put_str(pk, c.foundation);
            pk.pack_uint32(c.priority);
            put_str(pk, c.type);
            put_str(pk, c.ip);
            pk.pack_uint16(c.port);
        }
    }
    bool operator()(const CallFrame& f) const {
        const bool end = f.op == CallFrame::Op::end;
        const bool has_ice = !end && f.ice;
        const bool has_media = !end && (!f.media.empty() || !has_ice);
        if (f.reason.size() > k_max_call_reason_bytes || !valid_utf8(f.reason)) return false;
        if (has_media && (f.media.empty() || f.media.size() > k_max_media_addresses)) return false;
        for (const auto& m : f.media)
            if (m.port == 0 || m.ip.size() > k_max_ip_bytes || !valid_utf8(m.ip)) return false;
        if (has_ice && !ice_params_ok(f.ice->ufrag, f.ice->pwd, f.ice->candidates)) return false;
        put_header(pk, 3 + (has_media ? 1 : 0) + (has_ice ? 3 : 0), "call");
        put_str(pk, "i");
        put_id(pk, f.id);
        put_str(pk, "o");
        put_str(pk, f.op == CallFrame::Op::offer    ? "offer"
                    : f.op == CallFrame::Op::accept ? "accept"
                                                    : "end");
        put_str(pk, "r");
        put_str(pk, f.reason);
        if (has_media) {
            put_str(pk, "m");
            pk.pack_array(static_cast<std::uint32_t>(f.media.size()));
            for (const auto& m : f.media) {
                pk.pack_array(2);
                put_str(pk, m.ip);
                pk.pack_uint16(m.port);
            }
        }
        if (has_ice) put_ice_params(f.ice->ufrag, f.ice->pwd, f.ice->candidates);
        return true;
    }
    bool operator()(const IceFrame& f) const {
        const bool end = f.op == IceFrame::Op::end;
        if (f.reason.size() > 32 || !valid_utf8(f.reason)) return false;
        if (!end && !ice_params_ok(f.ufrag, f.pwd, f.candidates)) return false;
        put_header(pk, end ? 4 : 7, "ice");
        put_str(pk, "s");
        put_id(pk, f.attempt);
        put_str(pk, "o");
        put_str(pk, f.op == IceFrame::Op::offer ? "offer" : f.op == IceFrame::Op::answer ? "answer" : "end");
        put_str(pk, "ts");
        pk.pack_int64(f.ts);
        put_str(pk, "r");
        put_str(pk, f.reason);
        if (!end) put_ice_params(f.ufrag, f.pwd, f.candidates);
        return true;
    }
    bool operator()(const UnknownFrame&) const { return false; }
};

// ---- decoding ----------------------------------------------------------------

// Pre-pass: every element an array or map claims needs at least one byte of
// input, so the claimed total can never exceed the body size in a valid
// document. Checking that before msgpack-c allocates bounds its memory use to
// a small multiple of the body size.
struct BoundsVisitor : msgpack::null_visitor {
    std::size_t budget;
    std::size_t depth = 0;
    explicit BoundsVisitor(std::size_t size) : budget(size) {}
    bool start_array(std::uint32_t n) {
        if (n > budget || ++depth > k_max_depth) return false;
        budget -= n;
        return true;
    }
    bool end_array() {
        --depth;
        return true;
    }
    bool start_map(std::uint32_t n) {
        if (n > budget / 2 || ++depth > k_max_depth) return false;
        budget -= 2 * std::size_t{n};
        return true;
    }
    bool end_map() {
        --depth;
        return true;
    }
};

// The string-keyed entries of a map, with duplicate detection.
class Fields {
public:
    static Result<Fields> of(const msgpack::object& map) {
        Fields f;
        for (std::uint32_t i = 0; i < map.via.map.size; ++i) {
            const auto& kv = map.via.map.ptr[i];
            if (kv.key.type != msgpack::type::STR) continue;  // not ours: ignore
            std::string_view key(kv.key.via.str.ptr, kv.key.via.str.size);
            for (const auto& [k, v] : f.m_entries)
                if (k == key)
                    return malformed("the key '" + std::string(key.substr(0, 32)) + "' appears twice");
            f.m_entries.emplace_back(key, &kv.val);
        }
        return f;
    }
    const msgpack::object* get(std::string_view key) const {
        for (const auto& [k, v] : m_entries)
            if (k == key) return v;
        return nullptr;
    }

private:
    std::vector<std::pair<std::string_view, const msgpack::object*>> m_entries;
};

// Readers: a missing optional key keeps the default; a missing required key,
// a wrong type or an oversized value is an error naming the key.
struct Reader {
    const Fields& fields;

    const msgpack::object* need(std::string_view key, Error& err) const {
        auto* o = fields.get(key);
        if (!o) err = malformed("the required key '" + std::string(key) + "' is missing");
        return o;
    }

    bool str(std::string_view key, std::size_t max, std::string& out, bool required, Error& err) const {
        auto* o = fields.get(key);
        if (!o) {
            if (required) err = malformed("the required key '" + std::string(key) + "' is missing");
            return !required;
        }
        if (o->type != msgpack::type::STR) {
            err = malformed("'" + std::string(key) + "' must be a string");
            return false;
        }
        std::string_view s(o->via.str.ptr, o->via.str.size);
        if (s.size() > max) {
            err = malformed("'" + std::string(key) + "' is longer than " + std::to_string(max) + " bytes");
            return false;
        }
        if (!valid_utf8(s)) {
            err = malformed("'" + std::string(key) + "' is not valid UTF-8");
            return false;
        }
        out.assign(s);
        return true;
    }

    static bool id_of(const msgpack::object& o, MessageId& out) {
        if (o.type != msgpack::type::BIN || o.via.bin.size != MessageId::size) return false;
        std::copy_n(reinterpret_cast<const std::uint8_t*>(o.via.bin.ptr), MessageId::size, out.bytes.begin());
        return true;
    }

    bool id(std::string_view key, MessageId& out, Error& err) const {
        auto* o = need(key, err);
        if (!o) return false;
        if (!id_of(*o, out)) {
            err = malformed("'" + std::string(key) + "' must be 16 bytes of binary");
            return false;
        }
        return true;
    }

    // A missing optional key keeps `out`.
    bool boolean(std::string_view key, bool& out, bool required, Error& err) const {
        auto* o = fields.get(key);
        if (!o) {
            if (required) err = malformed("the required key '" + std::string(key) + "' is missing");
            return !required;
        }
        if (o->type != msgpack::type::BOOLEAN) {
            err = malformed("'" + std::string(key) + "' must be a boolean");
            return false;
        }
        out = o->via.boolean;
        return true;
    }

    bool i64(std::string_view key, std::int64_t& out, Error& err) const {
        auto* o = need(key, err);
        if (!o) return false;
        if (o->type == msgpack::type::POSITIVE_INTEGER &&
            o->via.u64 <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
            out = static_cast<std::int64_t>(o->via.u64);
            return true;
        }
        if (o->type == msgpack::type::NEGATIVE_INTEGER) {
            out = o->via.i64;
            return true;
        }
        err = malformed("'" + std::string(key) + "' must be a 64-bit integer");
        return false;
    }

    bool u32(std::string_view key, std::uint32_t& out, Error& err) const {
        auto* o = need(key, err);
        if (!o) return false;
        if (o->type != msgpack::type::POSITIVE_INTEGER ||
            o->via.u64 > std::numeric_limits<std::uint32_t>::max()) {
            err = malformed("'" + std::string(key) + "' must be an unsigned 32-bit integer");
            return false;
        }
        out = static_cast<std::uint32_t>(o->via.u64);
        return true;
    }
};

Result<Frame> decode_hello(const Reader& rd) {
    HelloFrame f;
    Error err;
    if (!rd.u32("p", f.protocol, err) || !rd.str("n", k_max_name_bytes, f.name, false, err) ||
        !rd.str("s", k_max_status_bytes, f.status, false, err) ||
        !rd.str("nt", k_max_note_bytes, f.note, false, err))
        return err;
    if (auto* caps = rd.fields.get("c")) {
        if (caps->type != msgpack::type::ARRAY) return malformed("'c' must be an array of strings");
        if (caps->via.array.size > k_max_caps) return malformed("'c' has more than 16 capabilities");
        for (std::uint32_t i = 0; i < caps->via.array.size; ++i) {
            const auto& o = caps->via.array.ptr[i];
            if (o.type != msgpack::type::STR) return malformed("'c' must be an array of strings");
            std::string_view s(o.via.str.ptr, o.via.str.size);
            if (s.size() > k_max_cap_bytes || !valid_utf8(s))
                return malformed("a capability in 'c' is too long or not UTF-8");
            f.caps.emplace_back(s);
        }
    }
    return Frame{std::move(f)};
}

// "u", "p" and "c" of an `ice` frame or a call's offer/accept.
Result<void> read_ice_params(const Reader& rd, std::string& ufrag, std::string& pwd,
                             std::vector<IceCandidateInfo>& cands) {
    Error err;
    if (!rd.str("u", 32, ufrag, true, err) || !rd.str("p", 64, pwd, true, err)) return err;
    if (!ice_chars(ufrag, 4, 32) || !ice_chars(pwd, 22, 64))
        return malformed("'u' or 'p' is not an ICE ufrag/password");
    auto* c = rd.need("c", err);
    if (!c) return err;
    if (c->type != msgpack::type::ARRAY || c->via.array.size == 0 || c->via.array.size > k_max_ice_candidates)
        return malformed("'c' must be an array of 1 to 24 candidates");
    for (std::uint32_t i = 0; i < c->via.array.size; ++i) {
        const auto& a = c->via.array.ptr[i];
        if (a.type != msgpack::type::ARRAY || a.via.array.size != 5)
            return malformed("a candidate must have 5 fields");
        const auto* e = a.via.array.ptr;
        if (e[0].type != msgpack::type::STR || e[1].type != msgpack::type::POSITIVE_INTEGER ||
            e[2].type != msgpack::type::STR || e[3].type != msgpack::type::STR ||
            e[4].type != msgpack::type::POSITIVE_INTEGER ||
            e[1].via.u64 > std::numeric_limits<std::uint32_t>::max() || e[4].via.u64 > 65535)
            return malformed("a candidate has a field of the wrong type");
        IceCandidateInfo ci;
        ci.foundation.assign(e[0].via.str.ptr, e[0].via.str.size);
        ci.priority = static_cast<std::uint32_t>(e[1].via.u64);
        ci.type.assign(e[2].via.str.ptr, e[2].via.str.size);
        ci.ip.assign(e[3].via.str.ptr, e[3].via.str.size);
        ci.port = static_cast<std::uint16_t>(e[4].via.u64);
        if (!candidate_ok(ci)) return malformed("a candidate has a bad foundation, type, ip or port");
        cands.push_back(std::move(ci));
    }
    return {};
}

Result<Frame> decode_call(const Reader& rd) {
    CallFrame f;
    Error err;
    std::string op;
    if (!rd.id("i", f.id, err) || !rd.str("o", 8, op, true, err) ||
        !rd.str("r", k_max_call_reason_bytes, f.reason, false, err))
        return err;
    if (op == "offer")
        f.op = CallFrame::Op::offer;
    else if (op == "accept")
        f.op = CallFrame::Op::accept;
    else if (op == "end")
        f.op = CallFrame::Op::end;
    else
        return malformed("'o' must be offer, accept or end");
    if (f.op == CallFrame::Op::end) return Frame{std::move(f)};
    if (rd.fields.get("u")) {
        IceParams ice;
        if (auto r = read_ice_params(rd, ice.ufrag, ice.pwd, ice.candidates); !r) return r.error();
        f.ice = std::move(ice);
        if (!rd.fields.get("m")) return Frame{std::move(f)};
    }
    auto* m = rd.need("m", err);
    if (!m) return err;
    if (m->type != msgpack::type::ARRAY || m->via.array.size == 0 ||
        m->via.array.size > k_max_media_addresses)
        return malformed("'m' must be an array of 1 to 4 media addresses");
    for (std::uint32_t i = 0; i < m->via.array.size; ++i) {
        const auto& a = m->via.array.ptr[i];
        if (a.type != msgpack::type::ARRAY || a.via.array.size != 2 ||
            a.via.array.ptr[0].type != msgpack::type::STR ||
            a.via.array.ptr[1].type != msgpack::type::POSITIVE_INTEGER)
            return malformed("a media address must be [ip, port]");
        std::string_view ip(a.via.array.ptr[0].via.str.ptr, a.via.array.ptr[0].via.str.size);
        auto port = a.via.array.ptr[1].via.u64;
        if (ip.size() > k_max_ip_bytes || !valid_utf8(ip) || port == 0 || port > 65535)
            return malformed("a media address has a bad ip or port");
        f.media.push_back({std::string(ip), static_cast<std::uint16_t>(port)});
    }
    return Frame{std::move(f)};
}

Result<Frame> decode_ice(const Reader& rd) {
    IceFrame f;
    Error err;
    std::string op;
    if (!rd.id("s", f.attempt, err) || !rd.str("o", 8, op, true, err) || !rd.i64("ts", f.ts, err) ||
        !rd.str("r", 32, f.reason, false, err))
        return err;
    if (op == "offer")
        f.op = IceFrame::Op::offer;
    else if (op == "answer")
        f.op = IceFrame::Op::answer;
    else if (op == "end")
        f.op = IceFrame::Op::end;
    else
        return malformed("'o' must be offer, answer or end");
    if (f.op == IceFrame::Op::end) return Frame{std::move(f)};
    if (auto r = read_ice_params(rd, f.ufrag, f.pwd, f.candidates); !r) return r.error();
    return Frame{std::move(f)};
}

Result<Frame> decode_map(const msgpack::object& root) {
    if (root.type != msgpack::type::MAP) return malformed("the body is not a map");
    auto fields = Fields::of(root);
    if (!fields) return fields.error();
    Reader rd{*fields};
    Error err;

    std::string type;
    if (!rd.str("t", k_max_type_bytes, type, true, err)) return err;
    auto* v = rd.need("v", err);
    if (!v) return err;
    if (v->type != msgpack::type::POSITIVE_INTEGER || v->via.u64 == 0)
        return malformed("'v' must be a positive integer");

    if (type == "hello" || type == "msg" || type == "ack" || type == "presence" || type == "ka" ||
        type == "bye" || type == "req" || type == "ans" || type == "rcpt" || type == "typ" ||
        type == "call" || type == "ice") {
        if (v->via.u64 > k_version)
            return make_error(frame_errc::unsupported,
                              "the peer sent a '" + type + "' frame of version " +
                                  std::to_string(v->via.u64) +
                                  ", newer than this version reads (1): update juice");
    }
    if (type == "hello") return decode_hello(rd);
    if (type == "msg") {
        MessageFrame f;
        if (!rd.id("i", f.id, err) || !rd.i64("ts", f.ts, err) ||
            !rd.str("b", k_max_text_bytes, f.text, true, err))
            return err;
        return Frame{std::move(f)};
    }
    if (type == "ack") {
        AckFrame f;
        if (!rd.id("i", f.id, err)) return err;
        return Frame{f};
    }
    if (type == "presence") {
        PresenceFrame f;
        if (!rd.str("s", k_max_status_bytes, f.status, true, err) ||
            !rd.str("nt", k_max_note_bytes, f.note, false, err))
            return err;
        return Frame{std::move(f)};
    }
    if (type == "ka") {
        KeepaliveFrame f;
        if (!rd.boolean("r", f.reply, false, err)) return err;
        return Frame{f};
    }
    if (type == "req") {
        RequestFrame f;
        if (!rd.str("n", k_max_name_bytes, f.name, false, err) ||
            !rd.str("m", k_max_request_bytes, f.message, false, err) || !rd.i64("ts", f.ts, err))
            return err;
        return Frame{std::move(f)};
    }
    if (type == "ans") {
        AnswerFrame f;
        if (!rd.boolean("a", f.accept, true, err)) return err;
        return Frame{f};
    }
    if (type == "rcpt") {
        auto* ids = rd.need("i", err);
        if (!ids) return err;
        if (ids->type != msgpack::type::ARRAY || ids->via.array.size == 0 ||
            ids->via.array.size > k_max_receipt_ids)
            return malformed("'i' must be an array of 1 to 512 message ids");
        ReceiptFrame f;
        f.ids.resize(ids->via.array.size);
        for (std::uint32_t i = 0; i < ids->via.array.size; ++i)
            if (!Reader::id_of(ids->via.array.ptr[i], f.ids[i]))
                return malformed("'i' must hold 16-byte binary message ids");
        return Frame{std::move(f)};
    }
    if (type == "typ") {
        TypingFrame f;
        if (!rd.boolean("y", f.typing, true, err)) return err;
        return Frame{f};
    }
    if (type == "call") return decode_call(rd);
    if (type == "ice") return decode_ice(rd);
    if (type == "bye") {
        ByeFrame f;
        if (!rd.str("r", k_max_reason_bytes, f.reason, false, err)) return err;
        return Frame{std::move(f)};
    }
    return Frame{UnknownFrame{std::move(type)}};
}

}  // namespace

const std::error_category& frame_error_category() noexcept {
    static const FrameCategory category;
    return category;
}

Bytes encode_frame(const Frame& frame) {
    msgpack::sbuffer body;
    Packer pk(body);
    try {
        if (!std::visit(Encoder{pk}, frame)) return {};
    } catch (const std::exception&) {  // std::bad_alloc from the buffer
        return {};
    }
    if (body.size() == 0 || body.size() > k_max_frame_size) return {};
    Bytes out;
    out.reserve(4 + body.size());
    auto n = static_cast<std::uint32_t>(body.size());
    out.push_back(static_cast<std::uint8_t>(n >> 24));
    out.push_back(static_cast<std::uint8_t>(n >> 16));
    out.push_back(static_cast<std::uint8_t>(n >> 8));
    out.push_back(static_cast<std::uint8_t>(n));
    out.insert(out.end(), body.data(), body.data() + body.size());
    return out;
}

Result<Frame> decode_frame_body(std::span<const std::uint8_t> body) {
    if (body.empty() || body.size() > k_max_frame_size)
        return make_error(frame_errc::oversized, "the frame size " + std::to_string(body.size()) +
                                                     " is outside 1.." + std::to_string(k_max_frame_size));
    const auto* data = reinterpret_cast<const char*>(body.data());
    try {
        BoundsVisitor bounds(body.size());
        std::size_t off = 0;
        if (!msgpack::parse(data, body.size(), off, bounds))
            return malformed("the body is not valid msgpack");
        if (off != body.size()) return malformed("extra bytes after the msgpack body");
        off = 0;
        msgpack::unpack_limit limit(body.size(), body.size() / 2, body.size(), body.size(), body.size(),
                                    k_max_depth + 1);
        msgpack::object_handle handle = msgpack::unpack(data, body.size(), off, nullptr, nullptr, limit);
        return decode_map(handle.get());
    } catch (const std::exception& e) {
        return malformed(std::string("the body is not valid msgpack (") + e.what() + ")");
    }
}

void FrameDecoder::feed(std::span<const std::uint8_t> bytes) {
    if (m_failed) return;  // the stream is dead; do not grow the buffer
    if (m_pos > 0) {
        m_buf.erase(m_buf.begin(), m_buf.begin() + static_cast<std::ptrdiff_t>(m_pos));
        m_pos = 0;
    }
    m_buf.insert(m_buf.end(), bytes.begin(), bytes.end());
}

std::optional<Result<Frame>> FrameDecoder::next() {
    if (m_failed)
        return Result<Frame>(
            make_error(frame_errc::malformed, "the link's frame stream failed earlier: close it"));
    if (buffered() < 4) return std::nullopt;
    const std::uint8_t* p = m_buf.data() + m_pos;
    std::size_t len = std::size_t{p[0]} << 24 | std::size_t{p[1]} << 16 | std::size_t{p[2]} << 8 | p[3];
    if (len == 0 || len > k_max_frame_size) {
        m_failed = true;
        return Result<Frame>(make_error(frame_errc::oversized,
                                        "the peer announced a frame of " + std::to_string(len) +
                                            " bytes (allowed: 1.." + std::to_string(k_max_frame_size) + ")"));
    }
    if (buffered() < 4 + len) return std::nullopt;
    auto result = decode_frame_body(std::span(p + 4, len));
    m_pos += 4 + len;
    if (!result) m_failed = true;
    return result;
}

}  // namespace juice::node
