// shoal shared-memory pair transport: wake-ups (one hop, like a socket).
//
// Each pair holds a connected unix stream socket (abstract namespace, so nothing is left on disk), set up at dial
// time, over which each side passes the other an eventfd (cheaper to signal than a socket write). The receiving
// side consumes the incoming ring on the JS thread; when it finds nothing new it "arms" (sets the ring's
// dataWaiters word) and returns to the event loop, which watches the socket with uv_poll. A producer that
// publishes bytes and finds the ring armed disarms it and writes the peer's eventfd (or, until it has arrived,
// one byte to the socket): libuv wakes the JS thread directly, no helper thread in between. The socket also
// carries death: when the peer process exits or closes, the kernel closes its end and the poll reports EOF.
//
// Plain POSIX, no N-API.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <string>

namespace shoal_shm {

// Abstract-namespace address for the wake socket of segment `name` (no file: the kernel removes it with the fd).
socklen_t wakeAddr(const std::string& name, sockaddr_un* a);

// Pass `fd` over the unix socket `sock` (SCM_RIGHTS, with one data byte). Returns false on failure (errno set).
bool sendFd(int sock, int fd);

// Read from the socket, picking up a passed descriptor if one comes along (stored in *gotFd).
ssize_t recvWithFd(int sock, char* buf, size_t len, int* gotFd);

// Wake an armed consumer: write its eventfd `peerEvt`, or, while that has not arrived yet (peerEvt < 0), one byte
// to the wake socket `sock`. Never blocks; any thread.
void wakePeer(int peerEvt, int sock);

}  // namespace shoal_shm
