// Native test of the SPSC ring (src/ring.h, src/ring.cc), no N-API: built with a plain `c++` and run by
// core/src/transport/shm-ring.test.ts. Prints one line per case and exits non-zero on the first failure.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "../src/ring.h"

using namespace shoal_shm;

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);   \
      std::exit(1);                                                          \
    }                                                                        \
  } while (0)

static uint8_t pattern(uint64_t msg, uint64_t i) { return static_cast<uint8_t>((msg * 131 + i * 7 + 1) & 0xff); }

// Copies that cross the end of the data wrap to its start, in both directions.
static void copyWrapsAround() {
  const uint64_t cap = 16;
  uint8_t data[cap];
  std::memset(data, 0, cap);
  const uint8_t src[6] = {1, 2, 3, 4, 5, 6};
  ringCopyIn(data, cap, 13, src, 6);  // positions 13,14,15 then 0,1,2
  CHECK(data[13] == 1 && data[15] == 3 && data[0] == 4 && data[2] == 6 && data[3] == 0);
  uint8_t out[6] = {};
  ringCopyOut(data, cap, 16 * 5 + 13, out, 6);  // same offsets one lap later
  CHECK(std::memcmp(out, src, 6) == 0);
  ringCopyIn(data, cap, 4, src, 0);  // empty copies are allowed
  std::puts("ok copy wraps around the end of the ring");
}

// A frame goes in whole or not at all; the consumer's advance frees space and bumps the futex word.
static void putFrameIsAllOrNothing() {
  const uint64_t cap = 64;
  Ring r{};
  std::vector<uint8_t> data(cap);
  uint8_t msg[40];
  for (int i = 0; i < 40; i++) msg[i] = pattern(1, i);
  CHECK(ringPutFrame(r, data.data(), cap, msg, 40));  // 48 bytes used
  CHECK(r.head == 48);
  CHECK(!ringPutFrame(r, data.data(), cap, msg, 9));  // needs 17, 16 free
  CHECK(r.head == 48);
  CHECK(ringPutFrame(r, data.data(), cap, msg, 8));  // exactly fills the ring
  CHECK(r.head == 64);
  CHECK(!ringPutFrame(r, data.data(), cap, msg, 0));  // even an empty frame needs its length word
  uint64_t len = 0;
  ringCopyOut(data.data(), cap, 0, reinterpret_cast<uint8_t*>(&len), sizeof(len));
  CHECK(len == 40);
  uint8_t got[40];
  ringCopyOut(data.data(), cap, 8, got, 40);
  CHECK(std::memcmp(got, msg, 40) == 0);
  uint32_t seq = r.spaceSeq;
  ringConsumerAdvance(r, 48);
  CHECK(r.tail == 48 && r.spaceSeq == seq + 1);
  ringCopyOut(data.data(), cap, 48, reinterpret_cast<uint8_t*>(&len), sizeof(len));
  CHECK(len == 8);
  ringCopyOut(data.data(), cap, 56, got, 8);
  CHECK(std::memcmp(got, msg, 8) == 0);
  CHECK(ringPutFrame(r, data.data(), cap, msg, 40));  // a lap later: positions 64..111
  CHECK(r.head == 112);
  ringCopyOut(data.data(), cap, 64, reinterpret_cast<uint8_t*>(&len), sizeof(len));
  CHECK(len == 40);
  ringCopyOut(data.data(), cap, 72, got, 40);
  CHECK(std::memcmp(got, msg, 40) == 0);
  std::puts("ok a frame goes in whole or not at all");
}

// One producer thread streams framed messages (sizes 0 to several times the ring) through a small ring, chunk by
// chunk, sleeping on the futex word when full; the consumer checks every byte. Lengths include 0, 1 and odd ones.
static void streamsMessagesLargerThanTheRing() {
  const uint64_t cap = 4096;
  const int messages = 400;
  Ring r{};
  std::vector<uint8_t> data(cap);
  auto sizeOf = [](int m) -> uint64_t { return m % 7 == 0 ? 0 : m % 5 == 0 ? 1 : (static_cast<uint64_t>(m) * 977) % 20011; };
  std::thread producer([&] {
    std::vector<uint8_t> buf;
    uint64_t h = 0;
    auto put = [&](const uint8_t* src, size_t n) {
      size_t done = 0;
      while (done < n) {
        uint32_t seq = load(&r.spaceSeq);
        uint64_t used = h - load(&r.tail);
        if (used >= cap) {
          add(&r.spaceWaiters, 1u);
          if (h - load(&r.tail) >= cap) futexWait(&r.spaceSeq, seq, 50);
          add(&r.spaceWaiters, static_cast<uint32_t>(-1));
          continue;
        }
        size_t chunk = static_cast<size_t>(cap - used);
        if (chunk > n - done) chunk = n - done;
        ringCopyIn(data.data(), cap, h, src + done, chunk);
        done += chunk;
        h += chunk;
        store(&r.head, h);
      }
    };
    for (int m = 0; m < messages; m++) {
      uint64_t len = sizeOf(m);
      buf.resize(len);
      for (uint64_t i = 0; i < len; i++) buf[i] = pattern(m, i);
      put(reinterpret_cast<uint8_t*>(&len), sizeof(len));
      put(buf.data(), len);
    }
    store(&r.closed, 1u);
  });
  uint64_t t = 0;
  auto get = [&](uint8_t* dst, size_t n) {
    size_t done = 0;
    while (done < n) {
      uint64_t h = load(&r.head);
      CHECK(h - t <= cap);
      if (h == t) {
        cpuRelax();
        continue;
      }
      size_t chunk = static_cast<size_t>(h - t);
      if (chunk > n - done) chunk = n - done;
      ringCopyOut(data.data(), cap, t, dst + done, chunk);
      done += chunk;
      t += chunk;
      ringConsumerAdvance(r, t);
    }
  };
  std::vector<uint8_t> got;
  uint64_t total = 0;
  for (int m = 0; m < messages; m++) {
    uint64_t len = 0;
    get(reinterpret_cast<uint8_t*>(&len), sizeof(len));
    CHECK(len == sizeOf(m));
    got.assign(len, 0);
    get(got.data(), len);
    for (uint64_t i = 0; i < len; i++) CHECK(got[i] == pattern(m, i));
    total += len;
  }
  producer.join();
  CHECK(load(&r.closed) == 1u && load(&r.head) == t);
  std::printf("ok %d messages (%llu bytes) stream through a %llu-byte ring\n", messages,
              static_cast<unsigned long long>(total), static_cast<unsigned long long>(cap));
}

int main() {
  copyWrapsAround();
  putFrameIsAllOrNothing();
  streamsMessagesLargerThanTheRing();
  return 0;
}
