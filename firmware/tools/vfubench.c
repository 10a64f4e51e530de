// vfubench: the guest half of the vfio-user benchmark (scripts/bench-vfio-user). Static,
// libc only; runs in the guest as root.
//
//   vfubench DMA PCI_DIR BUF_ADDR SECONDS
//       PCI_DIR is the sysfs directory of tests/lab/vfu-testdev.py's device, bound to
//       uio_pci_generic (its INTx on /dev/uio0). For each size from 1 KiB to 1 MiB, for
//       FILL (the device writes guest RAM) and READ (it reads it), commands one at a time
//       for about SECONDS each: CMD written to BAR 0, the INTx waited for on /dev/uio0,
//       acknowledged (IRQ register, then the Command register unmasks INTx, as
//       uio_pci_generic wants). One DMA message per transfer in message mode (CHUNK =
//       size). Prints per size and direction:
//         VFUBENCH-DMA: dir=fill size=4096 ops=123 us_per_op=456.7 mib_s=8.9
//       and checks the last FILL of each size byte by byte through /dev/mem (BUF_ADDR must
//       be RAM the kernel was told to keep off, memmap=2M$BUF_ADDR).
//
//   vfubench PIO PORT EMULATED_PORT COUNT
//       COUNT 4-byte reads of PORT (an I/O BAR of a vfio-user device: each a REGION_READ
//       round trip to its server) and COUNT 1-byte reads of EMULATED_PORT (a register the
//       VMM emulates, such as the 16550's scratch register 0x3ff), timed:
//         VFUBENCH-PIO: vfio-user=0xc000 us=123.4 emulated=0x3ff us=5.6
//
//   vfubench MMIO PCI_DIR COUNT
//       COUNT 4-byte reads of BAR 0's ID register (a trapped memory BAR: REGION_READ):
//         VFUBENCH-MMIO: us=123.4
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { ADDR_LO = 0x04, ADDR_HI = 0x08, LEN = 0x0c, SEED = 0x10, CMD = 0x14, RESULT = 0x18, IRQ = 0x1c,
       COUNT = 0x20, ERRORS = 0x24, CHUNK = 0x28 };
enum { FILL = 1, READ = 3 };
enum { MAX_SIZE = 1 << 20, BUF_SPAN = 2 << 20 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "vfubench: %s: %s\n", what, strerror(errno));
    exit(1);
}

static volatile uint32_t *bar;
static int uio, config;

static void setreg(unsigned off, uint32_t v) { bar[off / 4] = v; }
static uint32_t reg(unsigned off) { return bar[off / 4]; }

static void *map_file(const char *path, off_t offset, size_t size) {
    int fd = open(path, O_RDWR | O_SYNC);
    if (fd < 0) die(path);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);
    if (p == MAP_FAILED) die(path);
    close(fd);
    return p;
}

// Memory space and bus master on, Interrupt Disable off.
static void unmask(void) {
    uint16_t command = 0x0006;
    if (pwrite(config, &command, 2, 4) != 2) die("config write");
}

// One command, waited for by its interrupt.
static void run(uint32_t cmd) {
    uint32_t events;
    setreg(CMD, cmd);
    if (read(uio, &events, 4) != 4) die("read /dev/uio0");
    setreg(IRQ, 1);
    unmask();
}

static int dma(int argc, char **argv) {
    if (argc != 5) return 2;
    char path[512];
    uint64_t buf = strtoull(argv[3], NULL, 0);
    double seconds = atof(argv[4]);
    snprintf(path, sizeof path, "%s/resource0", argv[2]);
    bar = map_file(path, 0, 4096);
    snprintf(path, sizeof path, "%s/config", argv[2]);
    if ((config = open(path, O_RDWR)) < 0) die(path);
    if ((uio = open("/dev/uio0", O_RDWR)) < 0) die("/dev/uio0");
    volatile uint8_t *ram = map_file("/dev/mem", (off_t)buf, BUF_SPAN);
    unmask();
    setreg(ADDR_LO, (uint32_t)buf);
    setreg(ADDR_HI, (uint32_t)(buf >> 32));
    int failed = 0;
    for (uint32_t size = 1024; size <= MAX_SIZE; size *= 4) {
        setreg(LEN, size);
        setreg(CHUNK, size);
        for (int d = 0; d < 2; d++) {
            uint32_t cmd = d == 0 ? FILL : READ;
            uint32_t errors = reg(ERRORS);
            uint64_t ops = 0;
            double t0 = now(), t;
            do {
                setreg(SEED, (uint32_t)ops);
                run(cmd);
                ops++;
                t = now();
            } while (t - t0 < seconds || ops < 3);
            double us = (t - t0) * 1e6 / (double)ops;
            printf("VFUBENCH-DMA: dir=%s size=%u ops=%llu us_per_op=%.1f mib_s=%.1f errors=%u\n", d == 0 ? "fill" : "read",
                   size, (unsigned long long)ops, us, (double)size / (us / 1e6) / (1 << 20), reg(ERRORS) - errors);
            if (reg(ERRORS) != errors) failed = 1;
            if (d == 0) {
                // The last FILL's seed was ops - 1: byte i is (seed + i) & 0xff.
                uint32_t seed = (uint32_t)(ops - 1), wrong = 0;
                for (uint32_t i = 0; i < size; i++) wrong += ram[i] != (uint8_t)(seed + i);
                if (wrong) {
                    printf("VFUBENCH-DMA: dir=fill size=%u: %u bytes wrong\n", size, wrong);
                    failed = 1;
                }
            }
            fflush(stdout);
        }
    }
    return failed;
}

static int pio(int argc, char **argv) {
    if (argc != 5) return 2;
    unsigned port = (unsigned)strtoul(argv[2], NULL, 0), emulated = (unsigned)strtoul(argv[3], NULL, 0);
    long count = atol(argv[4]);
    if (iopl(3) != 0) die("iopl");
    volatile uint32_t sink = 0;
    double t0 = now();
    for (long i = 0; i < count; i++) sink += inl((unsigned short)port);
    double t1 = now();
    for (long i = 0; i < count; i++) sink += inb((unsigned short)emulated);
    double t2 = now();
    printf("VFUBENCH-PIO: vfio-user=%#x us=%.1f emulated=%#x us=%.2f count=%ld\n", port, (t1 - t0) * 1e6 / (double)count,
           emulated, (t2 - t1) * 1e6 / (double)count, count);
    (void)sink;
    return 0;
}

static int mmio(int argc, char **argv) {
    if (argc != 4) return 2;
    char path[512];
    snprintf(path, sizeof path, "%s/resource0", argv[2]);
    bar = map_file(path, 0, 4096);
    long count = atol(argv[3]);
    volatile uint32_t sink = 0;
    double t0 = now();
    for (long i = 0; i < count; i++) sink += reg(0);
    double t1 = now();
    printf("VFUBENCH-MMIO: us=%.1f count=%ld id=%#x\n", (t1 - t0) * 1e6 / (double)count, count, reg(0));
    (void)sink;
    return 0;
}

int main(int argc, char **argv) {
    int r = 2;
    if (argc > 1 && strcmp(argv[1], "DMA") == 0) r = dma(argc, argv);
    else if (argc > 1 && strcmp(argv[1], "PIO") == 0) r = pio(argc, argv);
    else if (argc > 1 && strcmp(argv[1], "MMIO") == 0) r = mmio(argc, argv);
    if (r == 2) fprintf(stderr, "usage: vfubench DMA PCI_DIR BUF_ADDR SECONDS | PIO PORT EMULATED_PORT COUNT | MMIO PCI_DIR COUNT\n");
    return r;
}
