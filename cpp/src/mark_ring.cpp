// The shared-memory mark ring (see mark_ring.hpp for the layout and the trust model).
#include "greenprobe/mark_ring.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <charconv>
#include <cstring>
#include <limits>
#include <new>
#include <system_error>
#include <unordered_map>
#include <unordered_set>

namespace greenprobe::markring {

namespace {

constexpr std::size_t kFrameHead = 8;
constexpr std::size_t kMarkHead = 32;  // start, end, thread id, label_len, n_attrs, ok, 3 pad

std::size_t align8(std::size_t n) { return (n + 7) & ~std::size_t{7}; }
bool power_of_two(std::size_t n) { return n != 0 && (n & (n - 1)) == 0; }

template <typename T>
void put(std::string& buf, T value) {
    char raw[sizeof(T)];
    std::memcpy(raw, &value, sizeof(T));
    buf.append(raw, sizeof(T));
}

template <typename T>
T get(const unsigned char* p) {
    T value;
    std::memcpy(&value, p, sizeof(T));
    return value;
}

[[noreturn]] void fail_errno(const std::string& what) { throw std::system_error(errno, std::generic_category(), what); }

// The next code point of valid UTF-8 (no overlong forms, no surrogates, <= U+10FFFF), or -1.
long next_code_point(std::string_view s, std::size_t& i) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
        ++i;
        return b0;
    }
    std::size_t len;
    unsigned long cp;
    if ((b0 & 0xE0) == 0xC0) {
        len = 2, cp = b0 & 0x1Fu;
    } else if ((b0 & 0xF0) == 0xE0) {
        len = 3, cp = b0 & 0x0Fu;
    } else if ((b0 & 0xF8) == 0xF0) {
        len = 4, cp = b0 & 0x07u;
    } else {
        return -1;
    }
    if (i + len > s.size()) return -1;
    for (std::size_t k = 1; k < len; ++k) {
        const auto b = static_cast<unsigned char>(s[i + k]);
        if ((b & 0xC0) != 0x80) return -1;
        cp = (cp << 6) | (b & 0x3Fu);
    }
    static constexpr unsigned long kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
    i += len;
    return static_cast<long>(cp);
}

bool valid_utf8(std::string_view s) {
    for (std::size_t i = 0; i < s.size();) {
        if (next_code_point(s, i) < 0) return false;
    }
    return true;
}

void append_u16_escape(std::string& out, unsigned long unit) {
    static constexpr char kHex[] = "0123456789abcdef";
    const char esc[6] = {'\\', 'u', kHex[(unit >> 12) & 0xF], kHex[(unit >> 8) & 0xF], kHex[(unit >> 4) & 0xF],
                         kHex[unit & 0xF]};
    out.append(esc, 6);
}

}  // namespace

// -- JSON as Python's json.dumps writes it ------------------------------------------------------
bool append_json_string(std::string& out, std::string_view utf8) {
    out.push_back('"');
    for (std::size_t i = 0; i < utf8.size();) {
        const long cp = next_code_point(utf8, i);
        if (cp < 0) return false;
        switch (cp) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (cp >= 0x20 && cp <= 0x7E) {
                    out.push_back(static_cast<char>(cp));
                } else if (cp < 0x10000) {
                    append_u16_escape(out, static_cast<unsigned long>(cp));
                } else {  // a surrogate pair, as Python writes characters beyond the BMP
                    const unsigned long v = static_cast<unsigned long>(cp) - 0x10000;
                    append_u16_escape(out, 0xD800 | (v >> 10));
                    append_u16_escape(out, 0xDC00 | (v & 0x3FF));
                }
        }
    }
    out.push_back('"');
    return true;
}

std::size_t json_string_size(std::string_view utf8) {
    std::size_t n = 2;
    for (const char ch : utf8) {
        const auto b = static_cast<unsigned char>(ch);
        if (b >= 0x80) {
            n += b >= 0xF0 ? 12 : b >= 0xC0 ? 6 : 0;  // six characters per UTF-16 unit; continuation bytes add none
        } else if (b == '"' || b == '\\' || b == '\n' || b == '\r' || b == '\t' || b == '\b' || b == '\f') {
            n += 2;
        } else {
            n += b >= 0x20 && b <= 0x7E ? 1 : 6;
        }
    }
    return n;
}

void append_json_double(std::string& out, double value) {
    if (value != value) {
        out += "NaN";
        return;
    }
    if (value == std::numeric_limits<double>::infinity()) {
        out += "Infinity";
        return;
    }
    if (value == -std::numeric_limits<double>::infinity()) {
        out += "-Infinity";
        return;
    }
    // The shortest digits that round-trip, then laid out as repr() does: fixed notation when the
    // decimal point falls within (-4, 16] of the first digit, else d.ddde+XX.
    char sci[64];
    const auto res = std::to_chars(sci, sci + sizeof sci, value, std::chars_format::scientific);
    std::string_view s(sci, static_cast<std::size_t>(res.ptr - sci));
    std::string digits;
    std::size_t i = 0;
    if (s[0] == '-') {
        out.push_back('-');
        i = 1;
    }
    for (; i < s.size() && s[i] != 'e'; ++i) {
        if (s[i] != '.') digits.push_back(s[i]);
    }
    int exp10 = 0;
    std::from_chars(s.data() + i + 1 + (s[i + 1] == '+' ? 1 : 0), s.data() + s.size(), exp10);
    const int decpt = exp10 + 1;  // value = 0.DIGITS x 10^decpt
    const int nd = static_cast<int>(digits.size());
    if (decpt <= -4 || decpt > 16) {
        out.push_back(digits[0]);
        if (nd > 1) {
            out.push_back('.');
            out.append(digits, 1, std::string::npos);
        }
        const int e = decpt - 1;
        out.push_back('e');
        out.push_back(e < 0 ? '-' : '+');
        const std::string mag = std::to_string(e < 0 ? -e : e);
        if (mag.size() < 2) out.push_back('0');
        out += mag;
    } else if (decpt <= 0) {
        out += "0.";
        out.append(static_cast<std::size_t>(-decpt), '0');
        out += digits;
    } else if (decpt >= nd) {
        out += digits;
        out.append(static_cast<std::size_t>(decpt - nd), '0');
        out += ".0";
    } else {
        out.append(digits, 0, static_cast<std::size_t>(decpt));
        out.push_back('.');
        out.append(digits, static_cast<std::size_t>(decpt), std::string::npos);
    }
}

// -- the encoder -----------------------------------------------------------------------------------
bool MarkEncoder::begin(std::int64_t start_ns, std::int64_t end_ns, std::uint64_t thread_id, bool ok,
                        std::string_view label) {
    if (label.empty() || label.size() > kMaxLabelBytes) return false;
    buf_.clear();
    n_attrs_ = 0;
    json_bound_ = 2 + 7 + 20;  // {} and ,"pid":<20 digits>
    put(buf_, start_ns);
    put(buf_, end_ns);
    put(buf_, thread_id);
    put(buf_, static_cast<std::uint16_t>(label.size()));
    put(buf_, std::uint16_t{0});  // n_attrs, set as they come
    put(buf_, static_cast<std::uint8_t>(ok ? 1 : 0));
    buf_.append(3, '\0');
    buf_.append(label);
    return true;
}

bool MarkEncoder::attr(std::string_view name, AttrType type, std::size_t value_json) {
    if (name.empty() || name.size() > kMaxAttrNameBytes || n_attrs_ >= kMaxAttrs) return false;
    json_bound_ += 2 + json_string_size(name) + value_json;  // a comma, the name, a colon, the value
    if (json_bound_ > kMaxAttrsJsonBytes) return false;
    ++n_attrs_;
    std::memcpy(&buf_[26], &n_attrs_, sizeof n_attrs_);
    put(buf_, static_cast<std::uint16_t>(name.size()));
    put(buf_, static_cast<std::uint8_t>(type));
    buf_.append(name);
    return true;
}

bool MarkEncoder::attr_none(std::string_view name) { return attr(name, AttrType::None, 4); }

bool MarkEncoder::attr_bool(std::string_view name, bool value) {
    if (!attr(name, AttrType::Bool, 5)) return false;
    put(buf_, static_cast<std::uint8_t>(value ? 1 : 0));
    return true;
}

bool MarkEncoder::attr_int(std::string_view name, std::int64_t value) {
    if (!attr(name, AttrType::Int, 20)) return false;
    put(buf_, value);
    return true;
}

bool MarkEncoder::attr_float(std::string_view name, double value) {
    if (!attr(name, AttrType::Float, 24)) return false;  // -1.2345678901234567e-308
    put(buf_, value);
    return true;
}

bool MarkEncoder::attr_str(std::string_view name, std::string_view value) {
    if (value.size() > kMaxAttrValueBytes || !attr(name, AttrType::Str, json_string_size(value))) return false;
    put(buf_, static_cast<std::uint16_t>(value.size()));
    buf_.append(value);
    return true;
}

// -- the writer --------------------------------------------------------------------------------------
RingWriter::RingWriter(std::size_t capacity) : capacity_(capacity) {
    if (!power_of_two(capacity) || capacity < kMinCapacity || capacity > kMaxCapacity) {
        throw std::invalid_argument("mark ring capacity must be a power of two between 4 KiB and 64 MiB");
    }
    fd_ = memfd_create("greenprobe-marks", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd_ < 0) fail_errno("memfd_create for the mark ring");
    const std::size_t size = kHeaderBytes + capacity;
    void* p = MAP_FAILED;
    if (ftruncate(fd_, static_cast<off_t>(size)) != 0 ||
        (p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0)) == MAP_FAILED ||
        fcntl(fd_, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        const int err = errno;
        if (p != MAP_FAILED) munmap(p, size);
        close(fd_);
        errno = err;
        fail_errno("sizing, mapping or sealing the mark ring");
    }
    header_ = new (p) Header{};
    header_->magic = kMagic;
    header_->version = kVersion;
    header_->header_bytes = kHeaderBytes;
    header_->capacity = capacity;
    if (getrandom(&header_->ring_id, sizeof header_->ring_id, 0) != sizeof header_->ring_id) {
        header_->ring_id = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
                           (static_cast<std::uint64_t>(getpid()) << 40);
    }
    data_ = static_cast<unsigned char*>(p) + kHeaderBytes;
}

RingWriter::~RingWriter() {
    if (header_) munmap(header_, kHeaderBytes + capacity_);
    if (fd_ >= 0) close(fd_);
}

bool RingWriter::push(std::string_view payload) {
    const std::size_t need = align8(kFrameHead + payload.size());
    if (need > capacity_ / 4 || need > kMaxMarkFrameBytes) return false;
    std::lock_guard<std::mutex> lock(mutex_);
    const std::uint64_t tail = header_->tail.load(std::memory_order_acquire);
    std::size_t pos = static_cast<std::size_t>(head_ & (capacity_ - 1));
    const std::size_t to_end = capacity_ - pos;
    const std::size_t total = need > to_end ? to_end + need : need;
    if (head_ - tail > capacity_ || head_ + total - tail > capacity_) return false;
    if (need > to_end) {  // the rest of the ring is skipped; the frame starts over at 0
        const std::uint32_t skip[2] = {static_cast<std::uint32_t>(to_end), kSkipFrame};
        std::memcpy(data_ + pos, skip, sizeof skip);
        pos = 0;
    }
    const std::uint32_t frame[2] = {static_cast<std::uint32_t>(need), kMarkFrame};
    std::memcpy(data_ + pos, frame, sizeof frame);
    std::memcpy(data_ + pos + kFrameHead, payload.data(), payload.size());
    std::memset(data_ + pos + kFrameHead + payload.size(), 0, need - kFrameHead - payload.size());
    head_ += total;
    header_->head.store(head_, std::memory_order_release);
    pushed_.fetch_add(1, std::memory_order_relaxed);
    return true;
}

std::uint64_t RingWriter::pending_bytes() const {
    std::lock_guard<std::mutex> lock(const_cast<std::mutex&>(mutex_));
    return head_ - header_->tail.load(std::memory_order_acquire);
}

std::string RingWriter::refused_why() const {
    const std::uint32_t n = std::min<std::uint32_t>(header_->why_len.load(std::memory_order_acquire), kWhyBytes);
    return std::string(header_->why, n);
}

// -- the reader --------------------------------------------------------------------------------------
RingReader::RingReader(int fd) : fd_(fd), capacity_(0), tail_(0), read_(0) {
    try {
        const int seals = fcntl(fd, F_GET_SEALS);
        if (seals < 0) throw RingCorrupt("the mark ring is not a sealable memfd");
        if (!(seals & F_SEAL_SHRINK)) throw RingCorrupt("the mark ring's memfd is not sealed against shrinking");
        struct stat st {};
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) throw RingCorrupt("the mark ring is not a memfd");
        const auto size = static_cast<std::size_t>(st.st_size);
        if (size < kHeaderBytes + kMinCapacity || size > kHeaderBytes + kMaxCapacity) {
            throw RingCorrupt("the mark ring's size is outside 4 KiB..64 MiB");
        }
        void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) throw RingCorrupt(std::string("cannot map the mark ring: ") + std::strerror(errno));
        header_ = static_cast<Header*>(p);
        capacity_ = static_cast<std::size_t>(header_->capacity);  // read once: the client may change it later
        if (header_->magic != kMagic || header_->version != kVersion || header_->header_bytes != kHeaderBytes ||
            !power_of_two(capacity_) || kHeaderBytes + capacity_ != size) {
            munmap(p, size);
            header_ = nullptr;
            throw RingCorrupt("the mark ring's header does not match its size or this greenprobe's version");
        }
        data_ = static_cast<const unsigned char*>(p) + kHeaderBytes;
        ring_id_ = header_->ring_id;
        tail_ = header_->tail.load(std::memory_order_acquire);  // a ring a previous daemon drained in part
        read_ = tail_;  // what it drained and did not release, it did not make durable: read again
        const std::uint64_t head = header_->head.load(std::memory_order_acquire);
        if (head < tail_ || head - tail_ > capacity_ || (tail_ & 7) != 0) {
            throw RingCorrupt("the mark ring's indices are inconsistent");
        }
    } catch (...) {
        if (header_) munmap(header_, kHeaderBytes + capacity_);
        header_ = nullptr;
        close(fd_);
        throw;
    }
}

RingReader::~RingReader() {
    if (header_) munmap(header_, kHeaderBytes + capacity_);
    close(fd_);
}

std::uint64_t RingReader::pending_bytes() const {
    const std::uint64_t head = header_->head.load(std::memory_order_acquire);
    return head >= read_ ? std::min<std::uint64_t>(head - read_, capacity_) : 0;
}

MarkColumns RingReader::drain(std::int64_t pid, std::size_t max_bytes) {
    MarkColumns out;
    out.attrs_offsets.push_back(0);
    out.end_position = read_;
    const std::uint64_t head = header_->head.load(std::memory_order_acquire);
    if (head < read_ || head - tail_ > capacity_ || (head & 7) != 0) {
        throw RingCorrupt("the client moved the mark ring's head to an impossible place");
    }
    const std::size_t n = static_cast<std::size_t>(head - read_);
    if (n == 0) return out;
    // copied before it is read: the client may write on. Within the budget the copy ends where a
    // frame does, as the copy's own frame heads say (decode_frames checks every one of them again).
    const std::size_t pos = static_cast<std::size_t>(read_ & (capacity_ - 1));
    auto copy_out = [&](std::size_t from, std::size_t to) {  // ring bytes [from, to) after the tail
        copy_.resize(to);
        for (std::size_t at = from; at < to;) {
            const std::size_t src = (pos + at) & (capacity_ - 1);
            const std::size_t len = std::min(to - at, capacity_ - src);
            std::memcpy(copy_.data() + at, data_ + src, len);
            at += len;
        }
    };
    std::size_t take = std::min(n, std::max<std::size_t>(max_bytes, kFrameHead));
    copy_out(0, take);
    if (take < n) {
        std::size_t end = 0;
        while (end + kFrameHead <= take) {
            const auto size = get<std::uint32_t>(copy_.data() + end);
            const auto kind = get<std::uint32_t>(copy_.data() + end + 4);
            if (size < kFrameHead || (size & 7) != 0 || size > n - end || (kind != kMarkFrame && kind != kSkipFrame) ||
                (kind == kMarkFrame && size > kMaxMarkFrameBytes)) {
                throw RingCorrupt("a frame whose size (" + std::to_string(size) + " bytes) breaks the ring's framing");
            }
            if (end + size > take) {
                if (end == 0 && kind == kSkipFrame) {  // the rest of the ring, skipped: nothing to copy
                    read_ += size;
                    out.end_position = read_;
                    return out;
                }
                if (end == 0) {  // one mark over the budget: taken alone
                    copy_out(take, size);
                    end = size;
                }
                break;
            }
            end += size;
        }
        take = end;
    }
    decode_frames(copy_.data(), take, pid, out);
    read_ += take;
    out.end_position = read_;
    if (copy_.capacity() > kMaxKeptCopy) std::vector<unsigned char>().swap(copy_);  // after a drain of all
    if (out.refused) refuse(out.refused, out.refused_why);
    return out;
}

void RingReader::publish_tail(std::size_t taken) {
    tail_ += taken;
    header_->tail.store(tail_, std::memory_order_release);
}

void RingReader::commit(std::uint64_t marks) { header_->drained.fetch_add(marks, std::memory_order_acq_rel); }

bool RingReader::release(std::uint64_t position) {
    if (position <= tail_ || position > read_ || (position & 7) != 0) return false;
    publish_tail(static_cast<std::size_t>(position - tail_));
    return true;
}

std::int64_t RingReader::skip_to(std::uint64_t position) {
    const std::uint64_t head = header_->head.load(std::memory_order_acquire);
    if (read_ != tail_ || position <= tail_ || position > head || head - tail_ > capacity_ || (position & 7) != 0) {
        return -1;
    }
    std::int64_t marks = 0;  // the frames up to there, each head read once (the client may write on)
    for (std::uint64_t at = tail_; at < position;) {
        std::uint32_t frame[2];
        std::memcpy(frame, data_ + (at & (capacity_ - 1)), sizeof frame);
        if (frame[0] < kFrameHead || (frame[0] & 7) != 0 || frame[0] > position - at ||
            (frame[1] != kMarkFrame && frame[1] != kSkipFrame)) {
            return -1;  // not the frames a daemon drained: left as it is, read from the tail
        }
        marks += frame[1] == kMarkFrame;
        at += frame[0];
    }
    read_ = position;
    publish_tail(static_cast<std::size_t>(position - tail_));
    commit(static_cast<std::uint64_t>(marks));
    return marks;
}

void RingReader::refuse(std::uint64_t marks, std::string_view why) {
    const std::size_t n = std::min(why.size(), kWhyBytes);
    std::memcpy(header_->why, why.data(), n);
    header_->why_len.store(static_cast<std::uint32_t>(n), std::memory_order_release);
    header_->refused.fetch_add(marks, std::memory_order_acq_rel);
    header_->drained.fetch_add(marks, std::memory_order_acq_rel);
}

// -- decoding --------------------------------------------------------------------------------------------
namespace {

// One mark's payload into `out`, or the reason it is refused.
struct MarkDecoder {
    std::int64_t pid;
    MarkColumns& out;
    std::unordered_map<std::string, std::int32_t> label_ids;
    std::unordered_set<std::string> names;
    std::vector<std::string_view> seen;  // this mark's attribute names

    const char* decode(const unsigned char* p, std::size_t n) {
        if (n < kMarkHead) return "a mark shorter than its fixed fields";
        const auto start = get<std::int64_t>(p), end = get<std::int64_t>(p + 8);
        const auto tid = get<std::uint64_t>(p + 16);
        const auto label_len = get<std::uint16_t>(p + 24), n_attrs = get<std::uint16_t>(p + 26);
        const auto ok = get<std::uint8_t>(p + 28);
        if (start <= 0) return "start_ns must be a CLOCK_MONOTONIC time (> 0)";
        if (end < start) return "a mark that ends before it starts";
        if (ok > 1) return "a mark whose ok flag is neither 0 nor 1";
        if (label_len == 0 || label_len > kMaxLabelBytes) return "a label empty or longer than 256 bytes";
        if (n_attrs > kMaxAttrs) return "more than 64 attributes";
        std::size_t at = kMarkHead;
        if (at + label_len > n) return "a label past the end of its mark";
        const std::string_view label(reinterpret_cast<const char*>(p + at), label_len);
        if (!valid_utf8(label)) return "a label that is not UTF-8";
        at += label_len;
        std::string& json = out.attrs_data;
        const std::size_t json_start = json.size();
        json.push_back('{');
        bool pid_done = false;
        seen.clear();
        for (std::uint16_t k = 0; k < n_attrs; ++k) {
            if (at + 3 > n) return "an attribute past the end of its mark";
            const auto name_len = get<std::uint16_t>(p + at);
            const auto type = static_cast<AttrType>(p[at + 2]);
            at += 3;
            if (name_len == 0 || name_len > kMaxAttrNameBytes) return "an attribute name empty or over 64 bytes";
            if (at + name_len > n) return "an attribute name past the end of its mark";
            const std::string_view name(reinterpret_cast<const char*>(p + at), name_len);
            at += name_len;
            if (std::find(seen.begin(), seen.end(), name) != seen.end()) return "an attribute named twice";
            seen.push_back(name);
            if (k) json.push_back(',');
            if (!append_json_string(json, name)) return "an attribute name that is not UTF-8";
            json.push_back(':');
            const bool emit = name != "pid";
            if (!emit) {  // the sender's, as the kernel names it, whatever the mark says
                json += std::to_string(pid);
                pid_done = true;
            }
            switch (type) {
                case AttrType::None:
                    if (emit) json += "null";
                    break;
                case AttrType::Bool:
                    if (at + 1 > n) return "a value past the end of its mark";
                    if (p[at] > 1) return "a bool that is neither 0 nor 1";
                    if (emit) json += p[at] ? "true" : "false";
                    at += 1;
                    break;
                case AttrType::Int:
                    if (at + 8 > n) return "a value past the end of its mark";
                    if (emit) json += std::to_string(get<std::int64_t>(p + at));
                    at += 8;
                    break;
                case AttrType::Float:
                    if (at + 8 > n) return "a value past the end of its mark";
                    if (emit) append_json_double(json, get<double>(p + at));
                    at += 8;
                    break;
                case AttrType::Str: {
                    if (at + 2 > n) return "a value past the end of its mark";
                    const auto len = get<std::uint16_t>(p + at);
                    at += 2;
                    if (len > kMaxAttrValueBytes) return "an attribute value longer than 1024 bytes";
                    if (at + len > n) return "a value past the end of its mark";
                    const std::string_view value(reinterpret_cast<const char*>(p + at), len);
                    at += len;
                    if (emit ? !append_json_string(json, value) : !valid_utf8(value)) return "a value that is not UTF-8";
                    break;
                }
                default:
                    return "an attribute of an unknown type";
            }
        }
        if (n - at >= 8) return "bytes after the mark's last attribute";
        if (!pid_done) {
            if (n_attrs) json.push_back(',');
            json += "\"pid\":" + std::to_string(pid);
        }
        json.push_back('}');
        if (json.size() - json_start > kMaxAttrsJsonBytes) return "attributes over 8 KiB as JSON (the daemon's limit per mark)";
        if (json.size() > static_cast<std::size_t>(INT32_MAX)) return "a drain over 2 GiB of attributes";
        // accepted: the columns grow together, only now
        for (auto nm : seen) {
            if (names.emplace(nm).second) out.attr_names.emplace_back(nm);
        }
        if (names.emplace("pid").second) out.attr_names.emplace_back("pid");
        auto [it, fresh] = label_ids.try_emplace(std::string(label), static_cast<std::int32_t>(out.labels.size()));
        if (fresh) out.labels.emplace_back(label);
        out.label_index.push_back(it->second);
        out.start_ns.push_back(start);
        out.end_ns.push_back(end);
        out.thread_id.push_back(tid);
        out.ok.push_back(ok);
        out.attrs_offsets.push_back(static_cast<std::int32_t>(json.size()));
        return nullptr;
    }
};

}  // namespace

void decode_frames(const unsigned char* bytes, std::size_t n, std::int64_t pid, MarkColumns& out) {
    MarkDecoder dec{pid, out, {}, {}, {}};
    if (out.attrs_offsets.empty()) out.attrs_offsets.push_back(static_cast<std::int32_t>(out.attrs_data.size()));
    std::size_t at = 0;
    while (at < n) {
        if (n - at < kFrameHead) throw RingCorrupt("a frame head cut short");
        const auto size = get<std::uint32_t>(bytes + at), kind = get<std::uint32_t>(bytes + at + 4);
        if (size < kFrameHead || (size & 7) != 0 || size > n - at) {
            throw RingCorrupt("a frame whose size (" + std::to_string(size) + " bytes) breaks the ring's framing");
        }
        if (kind == kMarkFrame) {
            if (size > kMaxMarkFrameBytes) throw RingCorrupt("a mark frame over 64 KiB breaks the ring's framing");
            const std::size_t json_size = out.attrs_data.size();
            if (const char* why = dec.decode(bytes + at + kFrameHead, size - kFrameHead)) {
                out.attrs_data.resize(json_size);  // the refused mark's partial text goes
                if (!out.refused++) out.refused_why = why;
            }
        } else if (kind != kSkipFrame) {
            throw RingCorrupt("a frame of unknown kind " + std::to_string(kind));
        }
        at += size;
    }
}

}  // namespace greenprobe::markring
