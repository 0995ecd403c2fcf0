#!/usr/bin/env python3
"""User-space WAN delay for scripts/captures/generalise.py (this kernel has no sch_netem).

usage: delay.py TUN_NAME DELAY_MS   (run inside the router namespace, as root)
Creates TUN_NAME, reads every IP packet the kernel routes into it and writes it back
DELAY_MS later. Policy routing in that namespace (`ip rule add iif TUN_NAME lookup 100`)
sends the written-back packets on along the real routes, so each direction through the
router gains DELAY_MS, SYN and SYN-ACK included (a relay socket could not delay those).
"""
import fcntl
import heapq
import os
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_QUEUED = 20000  # packets held at once; beyond it new ones are dropped (bounded memory)


def main():
    name, delay = sys.argv[1], float(sys.argv[2]) / 1000.0
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    print("delay ready", flush=True)
    queue, seq = [], 0
    while True:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else 1.0
        r, _, _ = select.select([fd], [], [], timeout)
        if r:
            pkt = os.read(fd, 65535)
            if len(queue) < MAX_QUEUED:
                heapq.heappush(queue, (time.monotonic() + delay, seq, pkt))
                seq += 1
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            os.write(fd, heapq.heappop(queue)[2])


if __name__ == "__main__":
    main()
