// FrameQueue: the bounded FIFO of 20 ms frames between a device thread and
// the media thread (audio_pulse.cpp). Not synchronized itself: its owner
// guards it with a mutex. Private to juice_media; tests include it through
// juice_node_internal.
//
// Two limits keep it from adding latency to a call:
//   - capacity: a push beyond k_capacity frames drops the oldest, so a
//     stalled consumer costs at most k_capacity frames of memory and delay;
//   - standing-queue trimming: producer and consumer run at the same rate,
//     so frames that pile up during a stall (a slow start, a scheduling
//     hiccup) would otherwise stay queued as delay for the rest of the call.
//     pop() tracks the shortest the queue has been over each window of
//     k_window pops; if it never fell below k_slack + 1 frames, the excess
//     over k_slack is pure delay and is dropped at once.
#pragma once

#include "juice/node/media/audio.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <deque>
#include <limits>

namespace juice::node::media {

using Frame = std::array<std::int16_t, k_frame_samples>;

class FrameQueue {
public:
    static constexpr std::size_t k_capacity = 10;  // 200 ms
    static constexpr std::size_t k_window = 50;    // pops: 1 s at one pop per frame
    static constexpr std::size_t k_slack = 1;      // frames kept to absorb jitter

    void push(const Frame& f) {
        if (m_frames.size() >= k_capacity) {
            m_frames.pop_front();
            ++m_dropped;
        }
        m_frames.push_back(f);
    }

    // The oldest frame, or false when empty.
    bool pop(Frame& out) {
        m_min_depth = std::min(m_min_depth, m_frames.size());
        if (++m_pops == k_window) {
            if (m_min_depth > k_slack + 1) {
                const std::size_t excess = m_min_depth - k_slack - 1;
                m_frames.erase(m_frames.begin(), m_frames.begin() + static_cast<std::ptrdiff_t>(excess));
                m_dropped += excess;
            }
            m_pops = 0;
            m_min_depth = std::numeric_limits<std::size_t>::max();
        }
        if (m_frames.empty()) return false;
        out = m_frames.front();
        m_frames.pop_front();
        return true;
    }

    std::size_t size() const noexcept { return m_frames.size(); }
    // Frames dropped so far (overflow plus trimming).
    std::uint64_t dropped() const noexcept { return m_dropped; }

private:
    std::deque<Frame> m_frames;
    std::size_t m_pops = 0;
    std::size_t m_min_depth = std::numeric_limits<std::size_t>::max();
    std::uint64_t m_dropped = 0;
};

}  // namespace juice::node::media
