// shoal_nng: the receive loop of one pair end (see core.h). Reads go into the Core's rxBuf; complete small frames
// are parsed out and posted as one EV_MSGS block per read, a large payload is read into its own buffer (EV_MSG).
// Runs on nng's threads (RxStart/RxSubmit also on the JS thread), every function with `mu` held.
#include <nng/nng.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "core.h"

namespace shoal_nng {

namespace {

uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

constexpr size_t Align8(size_t n) { return (n + 7) & ~static_cast<size_t>(7); }

// Fail the connection for a bad frame (with mu held).
void RxBadFrame(Core* c, int why) {
  c->post(EV_BAD_FRAME, 0, why);
  nng_stream_close(c->conn);
}

}  // namespace

// Parse complete frames out of rxBuf; post small ones as one batch; maybe enter body mode. Returns false if
// the connection was failed.
bool RxParse(Core* c) {
  const size_t hdr = c->ipc ? 9 : 8;
  struct Small {
    size_t off, len;
  };
  std::vector<Small> smalls;
  size_t blockBytes = 0;
  bool ok = true;
  for (;;) {
    size_t avail = c->rxEnd - c->rxStart;
    if (avail < hdr) break;
    const uint8_t* h = c->rxBuf.get() + c->rxStart;
    if (c->ipc && h[0] != 1) {
      ok = false;
      RxBadFrame(c, 3);
      break;
    }
    uint64_t len = GetU64(c->ipc ? h + 1 : h);
    if (len < 4) {
      ok = false;
      RxBadFrame(c, 2);
      break;
    }
    if (len - 4 > c->maxMessage.load(std::memory_order_relaxed)) {
      ok = false;
      RxBadFrame(c, 1);
      break;
    }
    size_t payload = static_cast<size_t>(len - 4);
    if (payload <= kRxSmall) {
      if (avail < hdr + len) break;  // wait for the rest (it fits in rxBuf)
      smalls.push_back({c->rxStart + hdr + 4, payload});
      blockBytes += Align8(payload);
      c->rxStart += hdr + static_cast<size_t>(len);
      continue;
    }
    // Large: once header and hop count are in, read the payload straight into its own buffer.
    if (avail < hdr + 4) break;
    uint8_t* body = static_cast<uint8_t*>(std::malloc(payload));
    if (body == nullptr) {
      ok = false;
      c->post(EV_RX_END, 0, NNG_ENOMEM);
      nng_stream_close(c->conn);
      break;
    }
    size_t have = std::min(avail - hdr - 4, payload);
    std::memcpy(body, c->rxBuf.get() + c->rxStart + hdr + 4, have);
    c->rxStart += hdr + 4 + have;
    c->rxBody = body;
    c->rxBodyLen = payload;
    c->rxBodyGot = have;
    break;
  }
  if (!smalls.empty()) {
    uint8_t* block = static_cast<uint8_t*>(std::malloc(blockBytes > 0 ? blockBytes : 1));
    std::vector<uint32_t> lens;
    lens.reserve(smalls.size());
    size_t off = 0;
    for (const Small& m : smalls) {
      if (m.len > 0) std::memcpy(block + off, c->rxBuf.get() + m.off, m.len);
      off += Align8(m.len);
      lens.push_back(static_cast<uint32_t>(m.len));
    }
    c->post(EV_MSGS, 0, 0, block, blockBytes, std::move(lens));
  }
  if (ok && c->rxBody != nullptr && c->rxBodyGot == c->rxBodyLen) {  // the whole body was already buffered
    c->post(EV_MSG, 0, 0, c->rxBody, c->rxBodyLen);
    c->rxBody = nullptr;
    c->rxBodyLen = c->rxBodyGot = 0;
    return RxParse(c);
  }
  return ok;
}

// Submit the next read (with mu held): into the body in body mode, else into rxBuf's free tail.
void RxSubmit(Core* c) {
  if (c->rxPaused) {
    c->rxIdle = true;
    return;
  }
  nng_iov iov;
  if (c->rxBody != nullptr || c->rxBodyLen > 0) {
    iov = {c->rxBody + c->rxBodyGot, c->rxBodyLen - c->rxBodyGot};
  } else {
    if (c->rxStart == c->rxEnd) {
      c->rxStart = c->rxEnd = 0;
    } else if (c->rxStart > 0) {  // make room: a pending small frame always fits once moved to the front
      std::memmove(c->rxBuf.get(), c->rxBuf.get() + c->rxStart, c->rxEnd - c->rxStart);
      c->rxEnd -= c->rxStart;
      c->rxStart = 0;
    }
    iov = {c->rxBuf.get() + c->rxEnd, kRxBuf - c->rxEnd};
  }
  nng_aio_set_iov(c->rxAio, 1, &iov);
  nng_stream_recv(c->conn, c->rxAio);
}

void RxStart(Core* c) {
  c->rxStart = c->rxEnd = 0;
  RxSubmit(c);
}

void RxDone(void* arg) {
  Core* c = static_cast<Core*>(arg);
  std::lock_guard<std::mutex> lk(c->mu);
  int rv = nng_aio_result(c->rxAio);
  if (rv == 0 && c->closed) rv = NNG_ECLOSED;
  if (rv != 0) {
    c->post(EV_RX_END, 0, rv);
    return;
  }
  size_t n = nng_aio_count(c->rxAio);
  const bool bodyRead = c->rxBody != nullptr;
  if (bodyRead) {
    c->rxBodyGot += n;
    if (c->rxBodyGot < c->rxBodyLen) return RxSubmit(c);
    c->post(EV_MSG, 0, 0, c->rxBody, c->rxBodyLen);
    c->rxBody = nullptr;
    c->rxBodyLen = c->rxBodyGot = 0;
  } else {
    c->rxEnd += n;
  }
  if (!RxParse(c)) return;
  // Sparse small traffic belongs to the JS thread (jsrx.cc): a small read, fully parsed, hands the reads back.
  if (c->jsRx && !bodyRead && c->rxBody == nullptr && c->rxStart == c->rxEnd && n < kJsBack) {
    c->rxNng = false;
    return c->post(EV_RX_RESUME, 0, 0);
  }
  RxSubmit(c);
}

}  // namespace shoal_nng
