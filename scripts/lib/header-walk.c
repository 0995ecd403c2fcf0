/* header-walk: the floor of any replay of a classic pcap file, for scripts/bench.
 *
 *   header-walk FILE
 *
 * Reads the whole file with read(2) in 8 MiB chunks (from the page cache when it is warm) and
 * walks its 16-byte record headers, counting packets and captured bytes: what every tool has to
 * do before it looks at a single packet. It decodes nothing, so its CPU time is the floor the
 * issue-26 targets are stated against. Prints "PACKETS CAPTURED_BYTES" on standard output.
 * Classic pcap only (either byte order, micro- or nanosecond magic); exits 2 on anything else.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (8u << 20)

static uint32_t rd32(const unsigned char *p, int swap) {
    uint32_t v;
    memcpy(&v, p, 4);
    return swap ? __builtin_bswap32(v) : v;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: header-walk FILE\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror(argv[1]);
        return 2;
    }
    unsigned char *buf = malloc(CHUNK + 16);
    if (!buf) return 2;
    size_t have = 0, pos = 0;
    uint64_t skip = 0; /* bytes of a frame still to pass over in later chunks */
    uint64_t packets = 0, bytes = 0;
    int swap = -1, header_done = 0;
    for (;;) {
        /* keep the unconsumed tail (less than one record header) at the front */
        memmove(buf, buf + pos, have - pos);
        have -= pos;
        pos = 0;
        ssize_t n = read(fd, buf + have, CHUNK);
        if (n < 0) {
            perror("read");
            return 2;
        }
        if (n == 0) break;
        have += (size_t)n;
        if (!header_done) {
            if (have < 24) continue;
            uint32_t magic;
            memcpy(&magic, buf, 4);
            if (magic == 0xa1b2c3d4 || magic == 0xa1b23c4d) swap = 0;
            else if (magic == 0xd4c3b2a1 || magic == 0x4d3cb2a1) swap = 1;
            else {
                fprintf(stderr, "header-walk: not a classic pcap file\n");
                return 2;
            }
            pos = 24;
            header_done = 1;
        }
        if (skip) {
            size_t s = skip < have - pos ? (size_t)skip : have - pos;
            pos += s;
            skip -= s;
        }
        while (!skip && have - pos >= 16) {
            uint32_t caplen = rd32(buf + pos + 8, swap);
            packets++;
            bytes += caplen;
            pos += 16;
            size_t left = have - pos;
            if (caplen <= left) {
                pos += caplen;
            } else {
                pos = have;
                skip = caplen - left;
            }
        }
    }
    printf("%llu %llu\n", (unsigned long long)packets, (unsigned long long)bytes);
    return 0;
}
