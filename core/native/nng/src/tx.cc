// shoal_nng: the send queue of one pair end (see core.h). Send (addon.cc) queues framed messages; each write
// gathers up to kMaxIov iovs from the head of the queue (runs of small messages copied into the stage, larger ones
// zero-copy) and TxDone reports EV_SEND for every message it covered. Every function with `mu` held.
#include <nng/nng.h>

#include <cstdint>
#include <cstring>
#include <mutex>

#include "core.h"

namespace shoal_nng {

// Build the next write from the head of the queue (with mu held, no write in flight) and submit it.
void TxStart(Core* c) {
  size_t staged = 0;
  unsigned niov = 0;
  bool lastIsStage = false;
  size_t n = 0;
  for (; n < c->txq.size() && n < kMaxBatch; n++) {
    TxItem& it = c->txq[n];
    if (it.len <= kSmallMessage && staged + it.headLen + it.len <= kStageBytes) {
      if (!lastIsStage) {
        if (niov == kMaxIov) break;
        c->txIov[niov++] = {c->txStage.get() + staged, 0};
        lastIsStage = true;
      }
      std::memcpy(c->txStage.get() + staged, it.head, it.headLen);
      if (it.len > 0) std::memcpy(c->txStage.get() + staged + it.headLen, it.data, it.len);
      staged += it.headLen + it.len;
      c->txIov[niov - 1].iov_len += it.headLen + it.len;
    } else {
      if (niov + 2 > kMaxIov) break;
      c->txIov[niov++] = {it.head, it.headLen};
      c->txIov[niov++] = {const_cast<uint8_t*>(it.data), it.len};
      lastIsStage = false;
    }
  }
  c->txInWrite = n;
  c->txNiov = niov;
  nng_aio_set_iov(c->txAio, niov, c->txIov);
  nng_stream_send(c->conn, c->txAio);
}

void TxDone(void* arg) {
  Core* c = static_cast<Core*>(arg);
  std::lock_guard<std::mutex> lk(c->mu);
  int rv = nng_aio_result(c->txAio);
  if (rv == 0) {
    // Skip what was written; resubmit the rest (never after close).
    size_t done = nng_aio_count(c->txAio);
    unsigned i = 0;
    while (i < c->txNiov && done >= c->txIov[i].iov_len) done -= c->txIov[i++].iov_len;
    if (i < c->txNiov) {
      if (c->closed) {
        rv = NNG_ECLOSED;
      } else {
        c->txIov[i].iov_buf = static_cast<uint8_t*>(c->txIov[i].iov_buf) + done;
        c->txIov[i].iov_len -= done;
        std::memmove(c->txIov, c->txIov + i, (c->txNiov - i) * sizeof(nng_iov));
        c->txNiov -= i;
        nng_aio_set_iov(c->txAio, c->txNiov, c->txIov);
        nng_stream_send(c->conn, c->txAio);
        return;
      }
    }
  }
  if (rv != 0) {
    // The stream is broken: everything queued fails with it.
    c->txBroken = rv;
    uint32_t last = c->txq.back().id;
    c->txq.clear();
    c->txInWrite = 0;
    c->post(EV_SEND, last, rv);
    return;
  }
  uint32_t last = c->txq[c->txInWrite - 1].id;
  c->txq.erase(c->txq.begin(), c->txq.begin() + static_cast<long>(c->txInWrite));
  c->txInWrite = 0;
  c->post(EV_SEND, last, 0);  // covers every id up to `last`
  if (!c->txq.empty() && !c->closed) TxStart(c);
}

}  // namespace shoal_nng
