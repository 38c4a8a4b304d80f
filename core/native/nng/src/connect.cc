// shoal_nng: how a pair end gets its stream (see core.h). A listener accepts and keeps the first peer whose SP
// handshake succeeds (later connections are dropped before the handshake); a dialer makes one attempt per dial()
// and reports EV_DIAL_FAIL for the JS layer to retry. The candidate stream becomes `conn` once the 8-byte SP
// headers have been exchanged and checked, then the receive loop starts. Every function with `mu` held.
#include <nng/nng.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>

#include "core.h"

namespace shoal_nng {

namespace {

void NegoSubmit(Core* c) {
  nng_iov iov;
  if (c->negoSending) {
    iov = {c->negoTx + c->negoDone, kSpHeader - c->negoDone};
    nng_aio_set_iov(c->negoAio, 1, &iov);
    nng_stream_send(c->candidate, c->negoAio);
  } else {
    iov = {c->negoRx + c->negoDone, kSpHeader - c->negoDone};
    nng_aio_set_iov(c->negoAio, 1, &iov);
    nng_stream_recv(c->candidate, c->negoAio);
  }
}

void NegoStart(Core* c, nng_stream* s) {
  c->candidate = s;
  const uint8_t hdr[kSpHeader] = {0, 'S', 'P', 0, kPair1Proto >> 8, kPair1Proto & 0xff, 0, 0};
  std::memcpy(c->negoTx, hdr, kSpHeader);
  c->negoDone = 0;
  c->negoSending = true;
  nng_aio_set_timeout(c->negoAio, 10000);
  NegoSubmit(c);
}

void NegoFailed(Core* c, int rv) {
  nng_stream_close(c->candidate);
  nng_stream_free(c->candidate);
  c->candidate = nullptr;
  if (c->role == Role::Dialer) c->post(EV_DIAL_FAIL, 0, rv);
  // A listener just waits for the next peer (its accept loop is still running).
}

}  // namespace

void StartAccept(Core* c) { nng_stream_listener_accept(c->listener, c->acceptAio); }

void NegoDone(void* arg) {
  Core* c = static_cast<Core*>(arg);
  std::lock_guard<std::mutex> lk(c->mu);
  int rv = nng_aio_result(c->negoAio);
  if (rv == 0 && c->closed) rv = NNG_ECLOSED;
  if (c->candidate == nullptr) return;
  if (rv != 0) return NegoFailed(c, rv);
  c->negoDone += nng_aio_count(c->negoAio);
  if (c->negoDone < kSpHeader) return NegoSubmit(c);
  if (c->negoSending) {
    c->negoSending = false;
    c->negoDone = 0;
    return NegoSubmit(c);
  }
  const uint8_t* r = c->negoRx;
  uint16_t peerProto = static_cast<uint16_t>((r[4] << 8) | r[5]);
  if (r[0] != 0 || r[1] != 'S' || r[2] != 'P' || r[3] != 0 || r[6] != 0 || r[7] != 0 || peerProto != kPair1Proto) {
    return NegoFailed(c, NNG_EPROTO);
  }
  c->conn = c->candidate;
  c->candidate = nullptr;
  // tcp: the JS thread reads and writes small frames itself (jsrx.cc), from EV_CONNECTED on; else nng reads.
  c->fd = c->ipc ? -1 : FindTcpFd(c->conn);
  c->post(EV_CONNECTED, 0, 0);
  if (c->fd < 0) RxStart(c);
}

void AcceptDone(void* arg) {
  Core* c = static_cast<Core*>(arg);
  std::lock_guard<std::mutex> lk(c->mu);
  int rv = nng_aio_result(c->acceptAio);
  if (c->closed) {
    if (rv == 0) {
      nng_stream* s = static_cast<nng_stream*>(nng_aio_get_output(c->acceptAio, 0));
      nng_stream_close(s);
      nng_stream_free(s);
    }
    return;
  }
  if (rv == 0) {
    nng_stream* s = static_cast<nng_stream*>(nng_aio_get_output(c->acceptAio, 0));
    if (c->conn != nullptr || c->candidate != nullptr) {
      // Pair semantics: one peer only. Drop extra connections before the handshake, so their dial fails.
      nng_stream_close(s);
      nng_stream_free(s);
    } else {
      NegoStart(c, s);
    }
  } else if (rv == NNG_ECLOSED) {
    return;
  }
  // Keep accepting (to turn away extra dialers promptly); back off briefly on errors like EMFILE.
  if (rv != 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  StartAccept(c);
}

void DialDone(void* arg) {
  Core* c = static_cast<Core*>(arg);
  std::lock_guard<std::mutex> lk(c->mu);
  int rv = nng_aio_result(c->dialAio);
  if (rv == 0 && c->closed) {
    nng_stream* s = static_cast<nng_stream*>(nng_aio_get_output(c->dialAio, 0));
    nng_stream_close(s);
    nng_stream_free(s);
    return;
  }
  if (rv != 0) {
    if (!c->closed) c->post(EV_DIAL_FAIL, 0, rv);
    return;
  }
  NegoStart(c, static_cast<nng_stream*>(nng_aio_get_output(c->dialAio, 0)));
}

}  // namespace shoal_nng
