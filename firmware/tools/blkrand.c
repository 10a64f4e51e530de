// blkrand: random 4 KiB direct I/O on a block device from N threads at once (queue depth
// N), for the device benchmark's IOPS rows. Static, libc only; runs in the guest.
//
//   blkrand DEVICE read|write THREADS SECONDS SPAN_MIB
//
// Each thread opens DEVICE with O_DIRECT and, until SECONDS have passed, reads or writes
// 4 KiB at a random 4 KiB-aligned offset within the first SPAN_MIB MiB. Prints one line:
//   blkrand mode=read threads=32 ops=123456 seconds=10.00 iops=12345
// and exits 1 if any transfer failed or was short.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { BLOCK = 4096 };

struct worker {
    pthread_t thread;
    const char *device;
    int writing;
    uint64_t blocks;
    double deadline;
    unsigned seed;
    uint64_t ops;
    int failed;
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *work(void *arg) {
    struct worker *w = arg;
    int fd = open(w->device, (w->writing ? O_RDWR : O_RDONLY) | O_DIRECT);
    if (fd < 0) {
        fprintf(stderr, "blkrand: open %s: %s\n", w->device, strerror(errno));
        w->failed = 1;
        return NULL;
    }
    void *buf;
    if (posix_memalign(&buf, BLOCK, BLOCK) != 0) {
        w->failed = 1;
        close(fd);
        return NULL;
    }
    memset(buf, 0xA5 ^ (int)w->seed, BLOCK);
    while (now() < w->deadline) {
        // 64 transfers between clock reads.
        for (int i = 0; i < 64; i++) {
            uint64_t r = ((uint64_t)rand_r(&w->seed) << 31) ^ (uint64_t)rand_r(&w->seed);
            off_t off = (off_t)((r % w->blocks) * BLOCK);
            ssize_t n = w->writing ? pwrite(fd, buf, BLOCK, off) : pread(fd, buf, BLOCK, off);
            if (n != BLOCK) {
                fprintf(stderr, "blkrand: %s at %lld: %s\n", w->writing ? "write" : "read", (long long)off,
                        n < 0 ? strerror(errno) : "short transfer");
                w->failed = 1;
                goto out;
            }
            w->ops++;
        }
    }
out:
    free(buf);
    close(fd);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: blkrand DEVICE read|write THREADS SECONDS SPAN_MIB\n");
        return 2;
    }
    int writing = strcmp(argv[2], "write") == 0;
    if (!writing && strcmp(argv[2], "read") != 0) {
        fprintf(stderr, "blkrand: mode must be read or write, not %s\n", argv[2]);
        return 2;
    }
    int threads = atoi(argv[3]);
    double seconds = atof(argv[4]);
    long span = atol(argv[5]);
    if (threads < 1 || threads > 256 || seconds <= 0 || span < 1) {
        fprintf(stderr, "blkrand: THREADS 1-256, SECONDS > 0, SPAN_MIB >= 1\n");
        return 2;
    }
    struct worker *w = calloc((size_t)threads, sizeof *w);
    if (!w) return 1;
    double t0 = now();
    for (int i = 0; i < threads; i++) {
        w[i] = (struct worker){.device = argv[1], .writing = writing, .blocks = (uint64_t)span * (1 << 20) / BLOCK,
                               .deadline = t0 + seconds, .seed = 0x9E3779B9u * (unsigned)(i + 1)};
        if (pthread_create(&w[i].thread, NULL, work, &w[i]) != 0) {
            fprintf(stderr, "blkrand: pthread_create failed\n");
            return 1;
        }
    }
    uint64_t ops = 0;
    int failed = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(w[i].thread, NULL);
        ops += w[i].ops;
        failed |= w[i].failed;
    }
    double took = now() - t0;
    printf("blkrand mode=%s threads=%d ops=%llu seconds=%.2f iops=%.0f\n", argv[2], threads,
           (unsigned long long)ops, took, (double)ops / took);
    free(w);
    return failed;
}
