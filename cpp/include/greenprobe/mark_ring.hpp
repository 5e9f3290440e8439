// Marks from a client process to the daemon through shared memory: a byte ring in a sealed memfd
// that the client writes and the daemon drains, so that a local mark costs a memcpy instead of a
// gRPC message.
//
//   client                                          daemon
//   RingWriter w(1 << 22);                          (the fd arrives over a Unix socket, SCM_RIGHTS)
//   MarkEncoder e; e.begin(...); e.attr_int(...);   RingReader r(fd);     // checks seals, size, header
//   w.push(e.bytes());   // false: full             MarkColumns c = r.drain(pid);
//
// The memory is shared with a process the daemon does not trust. The reader therefore keeps its own
// copy of every index and of the capacity, reads the writer's head once per drain, copies the bytes
// out before parsing them, and validates every frame and field of that copy; a ring whose framing
// is broken is closed (RingCorrupt), a mark whose fields are bad is refused and counted. The memfd
// must be sealed against shrinking (F_SEAL_SHRINK), so the mapping can never SIGBUS the daemon.
//
// Layout: a 4 KiB header (magic, version, capacity; head, tail and the daemon's counters on their
// own cache lines), then `capacity` bytes of frames. A frame is an 8-byte head {u32 size, u32 kind}
// and its payload, padded to 8 bytes; frames never straddle the end: a skip frame fills the rest.
// A mark's payload: {i64 start_ns, i64 end_ns, u64 thread_id, u16 label_len, u16 n_attrs, u8 ok,
// 3 pad}, the label, then per attribute {u16 name_len, u8 type, name, value}: int and float 8 bytes,
// bool 1, none 0, str {u16 len, bytes}. Little-endian, as the host (client and daemon share it).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace greenprobe::markring {

inline constexpr std::uint64_t kMagic = 0x31474e49524b4d47ULL;  // "GMKRING1"
inline constexpr std::uint32_t kVersion = 2;  // 2: ring_id
inline constexpr std::size_t kHeaderBytes = 4096;
inline constexpr std::size_t kMinCapacity = std::size_t{1} << 12;
inline constexpr std::size_t kMaxCapacity = std::size_t{1} << 26;  // 64 MiB
// A mark's limits, defined here once: exported as greenprobe._core.MARK_LIMITS, which the daemon's
// gRPC intake (python/greenprobe/daemon/limits.py) applies too.
inline constexpr std::size_t kMaxLabelBytes = 256;
inline constexpr std::size_t kMaxAttrs = 64;
inline constexpr std::size_t kMaxAttrNameBytes = 64;
inline constexpr std::size_t kMaxAttrValueBytes = 1024;
// A mark's attributes as JSON (pid included), as the gRPC intake allows per mark on average: a
// mark over it is not written into the ring (the encoder says no; it goes through gRPC), and the
// reader refuses one that is. 64 attributes of 1 KiB would be ~70 KB, so this bounds what a ring's
// marks cost the daemon per byte of ring.
inline constexpr std::size_t kMaxAttrsJsonBytes = 8 << 10;
// A mark's frame at most (the encoder's largest is ~14 KB): a larger one breaks the framing, and
// is never copied out of the ring.
inline constexpr std::size_t kMaxMarkFrameBytes = 64 << 10;
inline constexpr std::size_t kWhyBytes = 240;

enum class AttrType : std::uint8_t { None = 0, Bool = 1, Int = 2, Float = 3, Str = 4 };
enum FrameKind : std::uint32_t { kMarkFrame = 1, kSkipFrame = 2 };

static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "the ring's indices are shared between processes");

struct Header {
    std::uint64_t magic;
    std::uint32_t version;
    std::uint32_t header_bytes;
    std::uint64_t capacity;  // bytes of frames, a power of two
    std::uint64_t ring_id;   // random, set by the writer: names the ring to the next daemon
    alignas(64) std::atomic<std::uint64_t> head;     // bytes written, ever: the client's
    // bytes released, ever: the daemon's, published once the marks in them are durable (written
    // by the daemon); the client writes no further than capacity past it
    alignas(64) std::atomic<std::uint64_t> tail;
    alignas(64) std::atomic<std::uint64_t> drained;  // marks the daemon took (held or refused)
    std::atomic<std::uint64_t> refused;              // of those, marks it refused
    std::atomic<std::uint32_t> why_len;              // the last refusal's reason, for the client's report
    char why[kWhyBytes];
};
static_assert(sizeof(Header) <= kHeaderBytes, "the header fits its page");

class RingCorrupt : public std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Builds one mark's payload. Each call returns false when the mark exceeds a limit (the caller then
// sends it another way, where it is refused with the reason), kMaxAttrsJsonBytes included: the
// encoder keeps a bound on the JSON the reader will write (strings exactly, numbers at their widest).
class MarkEncoder {
  public:
    bool begin(std::int64_t start_ns, std::int64_t end_ns, std::uint64_t thread_id, bool ok, std::string_view label);
    bool attr_none(std::string_view name);
    bool attr_bool(std::string_view name, bool value);
    bool attr_int(std::string_view name, std::int64_t value);
    bool attr_float(std::string_view name, double value);
    bool attr_str(std::string_view name, std::string_view value);
    const std::string& bytes() const { return buf_; }

  private:
    bool attr(std::string_view name, AttrType type, std::size_t value_json);
    std::string buf_;
    std::uint16_t n_attrs_ = 0;
    std::size_t json_bound_ = 0;  // the most JSON the reader writes for the attributes so far
};

// The client's side. push() may be called from any thread.
class RingWriter {
  public:
    explicit RingWriter(std::size_t capacity);  // a power of two in [kMinCapacity, kMaxCapacity]
    ~RingWriter();
    RingWriter(const RingWriter&) = delete;
    RingWriter& operator=(const RingWriter&) = delete;

    int fd() const { return fd_; }
    std::size_t capacity() const { return capacity_; }
    bool push(std::string_view payload);  // false: no room (or a payload over a quarter of the ring)
    std::uint64_t pushed() const { return pushed_.load(std::memory_order_relaxed); }
    std::uint64_t pending_bytes() const;  // written, not yet drained
    std::uint64_t drained() const { return header_->drained.load(std::memory_order_acquire); }
    std::uint64_t refused() const { return header_->refused.load(std::memory_order_acquire); }
    std::string refused_why() const;

  private:
    int fd_ = -1;
    std::size_t capacity_;
    Header* header_ = nullptr;
    unsigned char* data_ = nullptr;
    std::mutex mutex_;
    std::uint64_t head_ = 0;  // the writer's own copy
    std::atomic<std::uint64_t> pushed_{0};
};

// One drain's marks as columns; attrs as JSON text (as json.dumps(attrs, separators=(",", ":"))
// writes it), the reader's `pid` attribute put in each.
struct MarkColumns {
    std::vector<std::string> labels;  // distinct, in first-seen order
    std::vector<std::int32_t> label_index;
    std::vector<std::int64_t> start_ns, end_ns;
    std::vector<std::uint64_t> thread_id;
    std::vector<std::uint8_t> ok;
    std::string attrs_data;                   // the marks' JSON objects, end to end
    std::vector<std::int32_t> attrs_offsets;  // n + 1 offsets into attrs_data
    std::vector<std::string> attr_names;      // distinct attribute names (pid included)
    std::uint64_t refused = 0;                // marks of this drain refused, and why (the first)
    std::string refused_why;
    std::uint64_t end_position = 0;  // the ring's byte count after this drain: release() it once durable
    std::size_t size() const { return start_ns.size(); }
};

// The daemon's side, from a descriptor a client sent. Throws RingCorrupt naming what is wrong.
class RingReader {
  public:
    explicit RingReader(int fd);  // takes the descriptor (closed by the destructor)
    ~RingReader();
    RingReader(const RingReader&) = delete;
    RingReader& operator=(const RingReader&) = delete;

    std::size_t capacity() const { return capacity_; }
    std::uint64_t ring_id() const { return ring_id_; }
    std::uint64_t pending_bytes() const;  // what the client has written since the last drain
    // Takes the frames written so far, whole frames up to `max_bytes` of them (one at least; the
    // rest wait for the next drain, so one ring's backlog cannot hold up the others'), and decodes
    // them; marks whose fields are bad are refused and counted in the client's header, `pid` is put
    // in every mark's attributes. RingCorrupt: the framing is broken (the ring is of no further
    // use). The drained bytes stay the client's until release(): a daemon that dies before leaves
    // them for the next one to read again. The client learns the marks are held only from
    // commit(): call it once they are (durable).
    MarkColumns drain(std::int64_t pid, std::size_t max_bytes = SIZE_MAX);
    void commit(std::uint64_t marks);  // `marks` of a drain are held: the client's flush may return
    // Hands the ring's bytes up to `position` (a drain's end_position) back to the client: the
    // marks in them are durable. False (nothing done) for a position outside what was drained.
    bool release(std::uint64_t position);
    // A ring a previous daemon wrote up to `position` (from its progress record) before it died
    // without releasing: its bytes up to there are skipped, released and their marks committed
    // (the client's flush counts them). Only on a fresh reader; returns the marks skipped, or -1
    // (nothing done) for a position outside what the client has written or off a frame boundary.
    std::int64_t skip_to(std::uint64_t position);
    std::uint64_t position() const { return read_; }  // bytes drained, ever
    std::uint64_t released() const { return tail_; }
    // Marks taken from the ring but refused (e.g. the daemon's limits), and why, for the client.
    void refuse(std::uint64_t marks, std::string_view why);

  private:
    static constexpr std::size_t kMaxKeptCopy = std::size_t{4} << 20;  // a larger copy goes after its drain
    void publish_tail(std::size_t taken);
    int fd_;
    std::size_t capacity_;
    Header* header_ = nullptr;
    const unsigned char* data_ = nullptr;
    std::uint64_t tail_;  // the reader's own copy: the shared one is only published
    std::uint64_t read_;  // bytes drained, ever: ahead of tail_ by what is not yet durable
    std::uint64_t ring_id_ = 0;
    std::vector<unsigned char> copy_;
};

// Decodes the mark frames of `bytes` (frames end to end, as drain copies them) into `out`;
// exposed for the tests and fuzzing. Throws RingCorrupt on broken framing.
void decode_frames(const unsigned char* bytes, std::size_t n, std::int64_t pid, MarkColumns& out);

// The JSON text of a double as Python's json.dumps writes it (repr; NaN, Infinity, -Infinity).
void append_json_double(std::string& out, double value);
// A JSON string literal as json.dumps writes it (ensure_ascii: \uXXXX for non-ASCII); false when
// `utf8` is not valid UTF-8.
bool append_json_string(std::string& out, std::string_view utf8);
// The length of what append_json_string writes for valid UTF-8 (without checking it).
std::size_t json_string_size(std::string_view utf8);

}  // namespace greenprobe::markring
