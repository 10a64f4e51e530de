/*
 * nested-vfio: a user-space virtio-blk driver for the test guest, through VFIO.
 *
 * Nested assignment test (README.md "A vIOMMU for the guest"): inside a SwiftVMM guest
 * with a virtio-iommu, a virtio-blk function is bound to vfio-pci and this program drives
 * it from user space with the VFIO type1 container/group API. Every DMA the device makes
 * then goes through the guest's VFIO domain, i.e. through SwiftVMM's virtio-iommu.
 *
 *   nested-vfio BDF [--sector N] [--cycles N] [--frames N] [--iova IOVA] [--unmapped IOVA]
 *               [--bench-frames N]
 *
 * On an e1000e (8086:10d3) it transmits instead (e1000e_main): --frames broadcast frames,
 * one frame from the unmapped IOVA (the host IOMMU faults it), a reset, --frames again.
 * With --bench-frames N it only transmits N frames as fast as it can, keeping the ring
 * full (the benchmark: scripts/bench-nested), and prints
 * "NESTED: e1000e txbench frames=N secs=S fps=F".
 *
 * On a virtio-blk, one line per result on stdout (prefix "NESTED: "):
 *   1. container + group + device, VFIO_IOMMU_MAP_DMA of one 64 KiB buffer at --iova;
 *      virtio init (virtio 1.2 §3.1.1) with VERSION_1 (+ ACCESS_PLATFORM when offered),
 *      one split virtqueue (§2.7) in that buffer, no interrupts (the used ring is polled);
 *      read sector N (VIRTIO_BLK_T_IN, §5.2.6): "blk read ok sector=N sum=CKSUM ...";
 *   2. isolation: the same request with its data buffer at --unmapped (never mapped):
 *      the device must answer VIRTIO_BLK_S_IOERR ("blk unmapped iova ... ok"), then the
 *      next correct read must work ("blk read after fault ok ...");
 *   3. --cycles times: close everything (the kernel detaches the group from the VFIO
 *      domain) and set it up again (attaches it again), then read: "cycle K ok".
 * Last line "NESTED: result ok" or "NESTED: result FAILED (N failures)"; exit status 0/1.
 *
 * sum is the POSIX cksum (CRC-32/CKSUM, length appended) of the 512-byte sector, so the
 * lab host can compare it with `dd if=IMAGE bs=512 skip=N count=1 | cksum`.
 *
 * Static, libc only: gcc -static -O2 (scripts/assets). uAPI from linux/vfio.h and the
 * virtio headers (linux-libc-dev).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/pci_regs.h>
#include <linux/vfio.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_config.h>
#include <linux/virtio_pci.h>
#include <linux/virtio_ring.h>

#define SECTOR_SIZE 512                /* virtio 1.2 §5.2.6: sectors are 512 bytes */
#define DMA_SIZE 0x10000               /* one mapping: rings, request, data */
#define OFF_DESC 0x0000                /* §2.7: descriptor table, 16-byte aligned */
#define OFF_AVAIL 0x1000               /* driver area, 2-byte aligned */
#define OFF_USED 0x2000                /* device area, 4-byte aligned */
#define OFF_HDR 0x3000                 /* struct virtio_blk_outhdr (16 bytes) */
#define OFF_STATUS 0x3100              /* the request's status byte */
#define OFF_DATA 0x4000                /* the 512-byte data buffer */
#define QUEUE_MAX 16                   /* our ring size cap (the device may offer more) */
#define POLL_TIMEOUT_MS 10000

static int failures;

#define say(...) do { printf("NESTED: " __VA_ARGS__); putchar('\n'); fflush(stdout); } while (0)
#define bad(...) do { failures++; say(__VA_ARGS__); } while (0)

/* A VFIO region: mmap'ed when the kernel allows it, pread/pwrite on the device fd otherwise. */
struct region {
    int fd;
    uint64_t offset, size;
    uint32_t flags;
    volatile uint8_t *map;
};

/* Where a virtio structure lives (§4.1.4: cfg_type, bar, offset, length). */
struct loc {
    int present;
    uint8_t bar;
    uint32_t offset, length;
};

struct dev {
    const char *bdf;
    int container, group, device;
    struct region config, bar[VFIO_PCI_ROM_REGION_INDEX];
    struct loc common, notify, devcfg;
    uint32_t notify_mult;
    uint16_t qsize, notify_off, avail_idx, used_seen;
    uint8_t *dma;          /* our view of the mapped buffer */
    uint64_t iova;         /* its IOVA */
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- region access */

static uint64_t region_read(struct region *r, uint64_t off, int width)
{
    uint64_t v = 0;
    if (r->map) {
        volatile uint8_t *p = r->map + off;
        switch (width) {
        case 1: v = *(volatile uint8_t *)p; break;
        case 2: v = *(volatile uint16_t *)p; break;
        case 4: v = *(volatile uint32_t *)p; break;
        }
        return v;
    }
    if (pread(r->fd, &v, (size_t)width, (off_t)(r->offset + off)) != width)
        bad("pread region at 0x%llx+0x%llx: %s", (unsigned long long)r->offset,
            (unsigned long long)off, strerror(errno));
    return v; /* x86 is little-endian, as PCI and virtio */
}

static void region_write(struct region *r, uint64_t off, int width, uint64_t v)
{
    if (r->map) {
        volatile uint8_t *p = r->map + off;
        switch (width) {
        case 1: *(volatile uint8_t *)p = (uint8_t)v; break;
        case 2: *(volatile uint16_t *)p = (uint16_t)v; break;
        case 4: *(volatile uint32_t *)p = (uint32_t)v; break;
        }
        return;
    }
    if (pwrite(r->fd, &v, (size_t)width, (off_t)(r->offset + off)) != width)
        bad("pwrite region at 0x%llx+0x%llx: %s", (unsigned long long)r->offset,
            (unsigned long long)off, strerror(errno));
}

/* Common configuration fields (struct virtio_pci_common_cfg, §4.1.4.3). */
#define COMMON(field) offsetof(struct virtio_pci_common_cfg, field)
#define COMMON_W(field) ((int)sizeof(((struct virtio_pci_common_cfg *)0)->field))

static uint64_t common_read(struct dev *d, size_t off, int width)
{
    return region_read(&d->bar[d->common.bar], d->common.offset + off, width);
}

static void common_write(struct dev *d, size_t off, int width, uint64_t v)
{
    region_write(&d->bar[d->common.bar], d->common.offset + off, width, v);
}

#define CREAD(d, f) common_read((d), COMMON(f), COMMON_W(f))
#define CWRITE(d, f, v) common_write((d), COMMON(f), COMMON_W(f), (v))

/* 64-bit fields as two 32-bit writes, low half first (§4.1.3.1). */
static void common_write64(struct dev *d, size_t off, uint64_t v)
{
    common_write(d, off, 4, v & 0xffffffffu);
    common_write(d, off + 4, 4, v >> 32);
}

/* ---------------------------------------------------------------- VFIO setup */

static int group_of(const char *bdf)
{
    char path[PATH_MAX], link[PATH_MAX];
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/iommu_group", bdf);
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n < 0) {
        bad("%s has no IOMMU group (%s): is it behind the vIOMMU?", bdf, strerror(errno));
        return -1;
    }
    link[n] = 0;
    const char *slash = strrchr(link, '/');
    return atoi(slash ? slash + 1 : link);
}

/* VFIO_IOMMU_GET_INFO with its capability chain: print the IOVA page sizes and ranges,
 * and check that [iova, iova+size) lies in one usable range. */
static int check_iova(int container, uint64_t iova, uint64_t size, int verbose)
{
    struct vfio_iommu_type1_info *info = calloc(1, sizeof *info);
    if (!info) return -1;
    info->argsz = sizeof *info;
    if (ioctl(container, VFIO_IOMMU_GET_INFO, info) < 0) {
        bad("VFIO_IOMMU_GET_INFO: %s", strerror(errno));
        free(info);
        return -1;
    }
    if (info->argsz > sizeof *info) { /* the kernel wants room for its capabilities */
        uint32_t argsz = info->argsz;
        free(info);
        info = calloc(1, argsz);
        if (!info) return -1;
        info->argsz = argsz;
        if (ioctl(container, VFIO_IOMMU_GET_INFO, info) < 0) {
            bad("VFIO_IOMMU_GET_INFO (caps): %s", strerror(errno));
            free(info);
            return -1;
        }
    }
    int ok = 1; /* no range capability: nothing to check against */
    if (verbose) say("iommu pgsizes=0x%llx", (unsigned long long)info->iova_pgsizes);
    if ((info->flags & VFIO_IOMMU_INFO_CAPS) && info->cap_offset) {
        uint32_t off = info->cap_offset;
        while (off && off + sizeof(struct vfio_info_cap_header) <= info->argsz) {
            struct vfio_info_cap_header *h = (void *)((uint8_t *)info + off);
            if (h->id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
                struct vfio_iommu_type1_info_cap_iova_range *r = (void *)h;
                ok = 0;
                for (uint32_t i = 0; i < r->nr_iovas; i++) {
                    if (verbose)
                        say("iova range %u: 0x%llx-0x%llx", i,
                            (unsigned long long)r->iova_ranges[i].start,
                            (unsigned long long)r->iova_ranges[i].end);
                    if (iova >= r->iova_ranges[i].start && iova + size - 1 <= r->iova_ranges[i].end)
                        ok = 1;
                }
            }
            if (h->next <= off) break; /* the chain only goes forward */
            off = h->next;
        }
    }
    free(info);
    return ok ? 0 : -1;
}

static int region_info(struct dev *d, uint32_t index, struct region *r)
{
    struct vfio_region_info ri = { .argsz = sizeof ri, .index = index };
    memset(r, 0, sizeof *r);
    r->fd = d->device;
    if (ioctl(d->device, VFIO_DEVICE_GET_REGION_INFO, &ri) < 0) return -1;
    r->offset = ri.offset;
    r->size = ri.size;
    r->flags = ri.flags;
    return 0;
}

static void close_device(struct dev *d)
{
    for (int i = 0; i < VFIO_PCI_ROM_REGION_INDEX; i++)
        if (d->bar[i].map) munmap((void *)d->bar[i].map, d->bar[i].size);
    if (d->dma && d->container >= 0) {
        struct vfio_iommu_type1_dma_unmap um = { .argsz = sizeof um, .iova = d->iova, .size = DMA_SIZE };
        if (ioctl(d->container, VFIO_IOMMU_UNMAP_DMA, &um) < 0)
            bad("VFIO_IOMMU_UNMAP_DMA: %s", strerror(errno));
    }
    if (d->dma) munmap(d->dma, DMA_SIZE);
    if (d->device >= 0) close(d->device);
    if (d->group >= 0) {
        if (ioctl(d->group, VFIO_GROUP_UNSET_CONTAINER) < 0)
            bad("VFIO_GROUP_UNSET_CONTAINER: %s", strerror(errno));
        close(d->group);
    }
    if (d->container >= 0) close(d->container);
    const char *bdf = d->bdf;
    memset(d, 0, sizeof *d);
    d->bdf = bdf;
    d->container = d->group = d->device = -1;
}

/* Container, group, device, BAR maps and the DMA mapping. verbose: print the details. */
static int open_device(struct dev *d, uint64_t iova, int verbose)
{
    int gnum = group_of(d->bdf);
    if (gnum < 0) return -1;
    char path[64];
    d->iova = iova;

    d->container = open("/dev/vfio/vfio", O_RDWR);
    if (d->container < 0) { bad("open /dev/vfio/vfio: %s", strerror(errno)); return -1; }
    if (ioctl(d->container, VFIO_GET_API_VERSION) != VFIO_API_VERSION) {
        bad("VFIO API version is not %d", VFIO_API_VERSION);
        return -1;
    }
    int type = VFIO_TYPE1v2_IOMMU;
    if (ioctl(d->container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) <= 0) {
        if (ioctl(d->container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU) <= 0) {
            bad("the container offers no type1 IOMMU (vfio_iommu_type1 loaded?)");
            return -1;
        }
        type = VFIO_TYPE1_IOMMU;
    }

    snprintf(path, sizeof path, "/dev/vfio/%d", gnum);
    d->group = open(path, O_RDWR);
    if (d->group < 0) { bad("open %s: %s", path, strerror(errno)); return -1; }
    struct vfio_group_status gs = { .argsz = sizeof gs };
    if (ioctl(d->group, VFIO_GROUP_GET_STATUS, &gs) < 0 || !(gs.flags & VFIO_GROUP_FLAGS_VIABLE)) {
        bad("group %d is not viable (every device in it must be bound to vfio-pci)", gnum);
        return -1;
    }
    if (ioctl(d->group, VFIO_GROUP_SET_CONTAINER, &d->container) < 0) {
        bad("VFIO_GROUP_SET_CONTAINER: %s", strerror(errno));
        return -1;
    }
    /* This attaches the group to a new IOMMU domain: the guest kernel's virtio-iommu
     * driver sends ATTACH. Without interrupt remapping type1 refuses (EPERM) unless
     * allow_unsafe_interrupts is set. */
    if (ioctl(d->container, VFIO_SET_IOMMU, type) < 0) {
        bad("VFIO_SET_IOMMU(%s): %s%s", type == VFIO_TYPE1v2_IOMMU ? "TYPE1v2" : "TYPE1", strerror(errno),
            errno == EPERM ? " (vfio_iommu_type1 allow_unsafe_interrupts=1 needed: no interrupt remapping)" : "");
        return -1;
    }
    if (check_iova(d->container, iova, DMA_SIZE, verbose) < 0) {
        bad("IOVA 0x%llx+0x%x is outside the container's usable ranges", (unsigned long long)iova, DMA_SIZE);
        return -1;
    }

    d->device = ioctl(d->group, VFIO_GROUP_GET_DEVICE_FD, d->bdf);
    if (d->device < 0) { bad("VFIO_GROUP_GET_DEVICE_FD %s: %s", d->bdf, strerror(errno)); return -1; }
    struct vfio_device_info di = { .argsz = sizeof di };
    if (ioctl(d->device, VFIO_DEVICE_GET_INFO, &di) < 0 || !(di.flags & VFIO_DEVICE_FLAGS_PCI) ||
        di.num_regions <= VFIO_PCI_CONFIG_REGION_INDEX) {
        bad("%s is not a VFIO PCI device", d->bdf);
        return -1;
    }
    if (region_info(d, VFIO_PCI_CONFIG_REGION_INDEX, &d->config) < 0) {
        bad("config region: %s", strerror(errno));
        return -1;
    }
    for (int i = 0; i < VFIO_PCI_ROM_REGION_INDEX; i++)
        if (region_info(d, (uint32_t)i, &d->bar[i]) < 0) memset(&d->bar[i], 0, sizeof d->bar[i]);
    if (verbose)
        say("device %s group %d %s, %u regions, %u irqs%s", d->bdf, gnum,
            type == VFIO_TYPE1v2_IOMMU ? "type1v2" : "type1", di.num_regions, di.num_irqs,
            (di.flags & VFIO_DEVICE_FLAGS_RESET) ? ", resettable" : "");

    /* The DMA buffer: anonymous memory, pinned and mapped at our IOVA by type1 (the guest
     * kernel sends the virtio-iommu MAP). */
    void *buf = mmap(NULL, DMA_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) { bad("mmap DMA buffer: %s", strerror(errno)); return -1; }
    d->dma = buf;
    memset(d->dma, 0, DMA_SIZE);
    struct vfio_iommu_type1_dma_map m = {
        .argsz = sizeof m,
        .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        .vaddr = (uintptr_t)buf,
        .iova = iova,
        .size = DMA_SIZE,
    };
    if (ioctl(d->container, VFIO_IOMMU_MAP_DMA, &m) < 0) {
        bad("VFIO_IOMMU_MAP_DMA iova 0x%llx: %s", (unsigned long long)iova, strerror(errno));
        munmap(buf, DMA_SIZE);
        d->dma = NULL;
        return -1;
    }
    if (verbose) say("mapped 0x%x bytes at iova 0x%llx", DMA_SIZE, (unsigned long long)iova);
    return 0;
}

/* ---------------------------------------------------------------- PCI + virtio */

static uint32_t cfg_read(struct dev *d, uint32_t off, int width) { return (uint32_t)region_read(&d->config, off, width); }
static void cfg_write(struct dev *d, uint32_t off, int width, uint32_t v) { region_write(&d->config, off, width, v); }

/* Walk the capability list for the virtio vendor capabilities (§4.1.4) and map the BARs
 * they name. */
static int find_virtio_caps(struct dev *d, int verbose)
{
    uint16_t vendor = (uint16_t)cfg_read(d, PCI_VENDOR_ID, 2), device = (uint16_t)cfg_read(d, PCI_DEVICE_ID, 2);
    if (verbose) say("pci %04x:%04x", vendor, device);
    if (vendor != 0x1af4 || device != 0x1040 + VIRTIO_ID_BLOCK) { /* §4.1.2.1: 0x1040 + device type */
        bad("%s is %04x:%04x, not a modern virtio-blk (1af4:1042)", d->bdf, vendor, device);
        return -1;
    }
    if (!(cfg_read(d, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST)) { bad("no capability list"); return -1; }
    uint32_t pos = cfg_read(d, PCI_CAPABILITY_LIST, 1) & ~3u;
    for (int guard = 0; pos >= 0x40 && pos < 0x100 && guard < 48; guard++) {
        uint32_t id = cfg_read(d, pos + PCI_CAP_LIST_ID, 1);
        if (id == PCI_CAP_ID_VNDR) {
            uint8_t type = (uint8_t)cfg_read(d, pos + VIRTIO_PCI_CAP_CFG_TYPE, 1);
            struct loc l = {
                .present = 1,
                .bar = (uint8_t)cfg_read(d, pos + VIRTIO_PCI_CAP_BAR, 1),
                .offset = cfg_read(d, pos + VIRTIO_PCI_CAP_OFFSET, 4),
                .length = cfg_read(d, pos + VIRTIO_PCI_CAP_LENGTH, 4),
            };
            /* §4.1.4.1: the driver uses the first capability of each type it understands */
            if (l.bar < VFIO_PCI_ROM_REGION_INDEX) {
                if (type == VIRTIO_PCI_CAP_COMMON_CFG && !d->common.present) d->common = l;
                else if (type == VIRTIO_PCI_CAP_NOTIFY_CFG && !d->notify.present) {
                    d->notify = l;
                    d->notify_mult = cfg_read(d, pos + VIRTIO_PCI_NOTIFY_CAP_MULT, 4);
                } else if (type == VIRTIO_PCI_CAP_DEVICE_CFG && !d->devcfg.present) d->devcfg = l;
            }
        }
        pos = cfg_read(d, pos + PCI_CAP_LIST_NEXT, 1) & ~3u;
    }
    if (!d->common.present || !d->notify.present || !d->devcfg.present) {
        bad("virtio capabilities missing: common=%d notify=%d device=%d", d->common.present,
            d->notify.present, d->devcfg.present);
        return -1;
    }
    struct loc *ls[] = { &d->common, &d->notify, &d->devcfg };
    for (int i = 0; i < 3; i++) {
        struct region *r = &d->bar[ls[i]->bar];
        if ((uint64_t)ls[i]->offset + ls[i]->length > r->size) {
            bad("virtio structure at BAR%u+0x%x (0x%x bytes) is outside the BAR (0x%llx)", ls[i]->bar,
                ls[i]->offset, ls[i]->length, (unsigned long long)r->size);
            return -1;
        }
        if (!r->map && (r->flags & VFIO_REGION_INFO_FLAG_MMAP)) {
            void *p = mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED, d->device, (off_t)r->offset);
            if (p == MAP_FAILED) {
                if (verbose) say("mmap BAR%u: %s; using pread/pwrite", ls[i]->bar, strerror(errno));
            } else {
                r->map = p;
            }
        }
    }
    if (verbose)
        say("virtio common BAR%u+0x%x%s notify BAR%u+0x%x x%u device BAR%u+0x%x", d->common.bar, d->common.offset,
            d->bar[d->common.bar].map ? " (mmap)" : " (pread/pwrite)", d->notify.bar, d->notify.offset,
            d->notify_mult, d->devcfg.bar, d->devcfg.offset);
    /* Memory space and bus mastering on (vfio-pci passes these command bits through). */
    uint32_t cmd = cfg_read(d, PCI_COMMAND, 2);
    cfg_write(d, PCI_COMMAND, 2, cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    return 0;
}

static int wait_status(struct dev *d, uint8_t want, uint8_t mask)
{
    uint64_t t0 = now_ms();
    while (((uint8_t)CREAD(d, device_status) & mask) != want) {
        if (now_ms() - t0 > POLL_TIMEOUT_MS) return -1;
        usleep(1000);
    }
    return 0;
}

/* §3.1.1 device initialization, one split virtqueue (queue 0) in the DMA buffer. */
static int virtio_init(struct dev *d, int verbose)
{
    CWRITE(d, device_status, 0); /* reset (§4.1.4.3.2: wait until it reads back 0) */
    if (wait_status(d, 0, 0xff) < 0) { bad("device did not reset"); return -1; }
    CWRITE(d, device_status, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    CWRITE(d, device_status, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);

    CWRITE(d, device_feature_select, 0);
    uint64_t features = CREAD(d, device_feature);
    CWRITE(d, device_feature_select, 1);
    features |= CREAD(d, device_feature) << 32;
    if (!(features & (1ull << VIRTIO_F_VERSION_1))) { bad("device does not offer VERSION_1"); return -1; }
    /* No device-specific features: plain 512-byte reads are all we need. */
    uint64_t want = (1ull << VIRTIO_F_VERSION_1) | (features & (1ull << VIRTIO_F_ACCESS_PLATFORM));
    CWRITE(d, guest_feature_select, 0);
    CWRITE(d, guest_feature, want & 0xffffffffu);
    CWRITE(d, guest_feature_select, 1);
    CWRITE(d, guest_feature, want >> 32);
    CWRITE(d, device_status, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
    if (!(CREAD(d, device_status) & VIRTIO_CONFIG_S_FEATURES_OK)) { bad("device refused features 0x%llx", (unsigned long long)want); return -1; }
    if (verbose)
        say("features device=0x%llx driver=0x%llx (VERSION_1%s)", (unsigned long long)features,
            (unsigned long long)want, (want & (1ull << VIRTIO_F_ACCESS_PLATFORM)) ? " ACCESS_PLATFORM" : "");

    CWRITE(d, queue_select, 0);
    uint16_t max = (uint16_t)CREAD(d, queue_size);
    if (max == 0) { bad("queue 0 does not exist"); return -1; }
    d->qsize = max < QUEUE_MAX ? max : QUEUE_MAX;
    if (d->qsize & (d->qsize - 1)) { bad("queue size %u is not a power of 2", d->qsize); return -1; }
    CWRITE(d, queue_size, d->qsize);
    CWRITE(d, queue_msix_vector, VIRTIO_MSI_NO_VECTOR);
    common_write64(d, COMMON(queue_desc_lo), d->iova + OFF_DESC);
    common_write64(d, COMMON(queue_avail_lo), d->iova + OFF_AVAIL);
    common_write64(d, COMMON(queue_used_lo), d->iova + OFF_USED);
    d->notify_off = (uint16_t)CREAD(d, queue_notify_off);
    memset(d->dma, 0, OFF_HDR);
    d->avail_idx = d->used_seen = 0;
    /* We poll the used ring: ask for no interrupts (§2.7.7). */
    ((struct vring_avail *)(d->dma + OFF_AVAIL))->flags = VRING_AVAIL_F_NO_INTERRUPT;
    CWRITE(d, queue_enable, 1);
    CWRITE(d, device_status, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
           VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
    uint8_t st = (uint8_t)CREAD(d, device_status);
    if (st & (VIRTIO_CONFIG_S_NEEDS_RESET | VIRTIO_CONFIG_S_FAILED) || !(st & VIRTIO_CONFIG_S_DRIVER_OK)) {
        bad("device status 0x%02x after DRIVER_OK", st);
        return -1;
    }
    if (verbose) {
        uint64_t cap = region_read(&d->bar[d->devcfg.bar], d->devcfg.offset, 4) |
                       region_read(&d->bar[d->devcfg.bar], d->devcfg.offset + 4, 4) << 32;
        say("virtio-blk ready: capacity %llu sectors, queue 0 size %u (device max %u), notify_off %u",
            (unsigned long long)cap, d->qsize, max, d->notify_off);
    }
    return 0;
}

/* One VIRTIO_BLK_T_IN of one sector into data_iova. Returns the status byte the device
 * wrote, or -1 if it did not complete the request in time (then the device status says
 * why, e.g. NEEDS_RESET). */
static int blk_read(struct dev *d, uint64_t sector, uint64_t data_iova)
{
    struct vring_desc *desc = (void *)(d->dma + OFF_DESC);
    struct vring_avail *avail = (void *)(d->dma + OFF_AVAIL);
    struct vring_used *used = (void *)(d->dma + OFF_USED);
    struct virtio_blk_outhdr *hdr = (void *)(d->dma + OFF_HDR);
    volatile uint8_t *status = d->dma + OFF_STATUS;

    hdr->type = VIRTIO_BLK_T_IN;
    hdr->ioprio = 0;
    hdr->sector = sector;
    *status = 0xff;
    memset(d->dma + OFF_DATA, 0, SECTOR_SIZE);
    /* §5.2.6: header (device-readable), data (device-writable), status (device-writable). */
    desc[0] = (struct vring_desc){ .addr = d->iova + OFF_HDR, .len = sizeof *hdr, .flags = VRING_DESC_F_NEXT, .next = 1 };
    desc[1] = (struct vring_desc){ .addr = data_iova, .len = SECTOR_SIZE, .flags = VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, .next = 2 };
    desc[2] = (struct vring_desc){ .addr = d->iova + OFF_STATUS, .len = 1, .flags = VRING_DESC_F_WRITE };
    avail->ring[d->avail_idx % d->qsize] = 0;
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* §2.7.13.2: ring entry before the index */
    d->avail_idx++;
    *(volatile uint16_t *)&avail->idx = d->avail_idx;
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* §2.7.13.3: index before the notification */
    region_write(&d->bar[d->notify.bar], d->notify.offset + (uint64_t)d->notify_off * d->notify_mult, 2, 0);

    uint64_t t0 = now_ms();
    while (*(volatile uint16_t *)&used->idx == d->used_seen) {
        if (now_ms() - t0 > POLL_TIMEOUT_MS) return -1;
        usleep(200);
    }
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* the used element after its index */
    struct vring_used_elem e = used->ring[d->used_seen % d->qsize];
    d->used_seen++;
    if (e.id != 0) bad("used ring returned id %u, not 0", e.id);
    return *status;
}

/* POSIX cksum (CRC-32 polynomial 0x04C11DB7, MSB first, then the length, complemented). */
static uint32_t posix_cksum(const uint8_t *p, size_t n)
{
    uint32_t crc = 0;
    size_t len = n;
    for (size_t i = 0;; i++) {
        uint8_t byte;
        if (i < n) byte = p[i];
        else if (len) { byte = (uint8_t)len; len >>= 8; }
        else break;
        crc ^= (uint32_t)byte << 24;
        for (int b = 0; b < 8; b++) crc = (crc & 0x80000000u) ? (crc << 1) ^ 0x04C11DB7u : crc << 1;
    }
    return ~crc;
}

static int read_and_report(struct dev *d, uint64_t sector, const char *what)
{
    int st = blk_read(d, sector, d->iova + OFF_DATA);
    if (st != VIRTIO_BLK_S_OK) {
        uint8_t ds = (uint8_t)CREAD(d, device_status);
        bad("%s FAILED sector=%llu status=%d device_status=0x%02x", what, (unsigned long long)sector, st, ds);
        return -1;
    }
    const uint8_t *data = d->dma + OFF_DATA;
    char head[33];
    for (int i = 0; i < 32; i++) head[i] = (data[i] >= 0x20 && data[i] < 0x7f && data[i] != '"') ? (char)data[i] : '.';
    head[32] = 0;
    say("%s ok sector=%llu sum=%u head=\"%s\"", what, (unsigned long long)sector, posix_cksum(data, SECTOR_SIZE), head);
    return 0;
}

/* Reset the device and unmap everything (closing the device fd also turns bus
 * mastering off in vfio-pci). */
static void shutdown_device(struct dev *d)
{
    if (d->common.present) CWRITE(d, device_status, 0);
    close_device(d);
}

/* ---------------------------------------------------------------- e1000e (82574) */

/* Registers (Intel 82574 datasheet §10.2; Linux drivers/net/ethernet/intel/e1000e/regs.h). */
#define E1000_CTRL 0x00000
#define E1000_STATUS 0x00008
#define E1000_ICR 0x000c0
#define E1000_IMC 0x000d8
#define E1000_TCTL 0x00400
#define E1000_TIPG 0x00410
#define E1000_TDBAL 0x03800
#define E1000_TDBAH 0x03804
#define E1000_TDLEN 0x03808
#define E1000_TDH 0x03810
#define E1000_TDT 0x03818
#define E1000_RAL0 0x05400
#define E1000_RAH0 0x05404
#define E1000_CTRL_SLU (1u << 6)      /* set link up */
#define E1000_CTRL_RST (1u << 26)     /* device reset, self-clearing */
#define E1000_STATUS_LU (1u << 1)     /* link up */
#define E1000_TCTL_EN (1u << 1)
#define E1000_TCTL_PSP (1u << 3)      /* pad short packets */
#define E1000_TCTL_CT (0x0fu << 4)    /* collision threshold (Linux's default) */
#define E1000_TCTL_COLD (0x3fu << 12) /* collision distance, full duplex */
#define E1000_TIPG_DEFAULT 0x00602008 /* IPGT 8, IPGR1 8, IPGR2 6 (Linux's e1000e) */
#define E1000_TXD_CMD_EOP 0x01
#define E1000_TXD_CMD_IFCS 0x02
#define E1000_TXD_CMD_RS 0x08
#define E1000_TXD_STAT_DD 0x01
#define E1000_RING 16                 /* descriptors; TDLEN must be a multiple of 128 bytes */
#define E1000_OFF_FRAMES 0x1000       /* frame buffers, 256 bytes apart */
#define FRAME_LEN 60                  /* minimum Ethernet frame without FCS */

/* Legacy transmit descriptor (82574 §7.2.10.1). */
struct e1000_tx_desc {
    uint64_t addr;
    uint16_t length;
    uint8_t cso, cmd, status, css;
    uint16_t special;
};

struct nic {
    struct dev *d;
    struct region *bar0;
    uint16_t tail;
    uint8_t mac[6];
};

static uint32_t nic_rd(struct nic *n, uint32_t reg) { return (uint32_t)region_read(n->bar0, reg, 4); }
static void nic_wr(struct nic *n, uint32_t reg, uint32_t v) { region_write(n->bar0, reg, 4, v); }

/* Reset, mask interrupts, link up, transmit ring in the DMA buffer, transmitter on. */
static int nic_init(struct nic *n, int verbose)
{
    nic_wr(n, E1000_IMC, 0xffffffffu);
    nic_wr(n, E1000_CTRL, nic_rd(n, E1000_CTRL) | E1000_CTRL_RST);
    usleep(10000);
    uint64_t t0 = now_ms();
    while (nic_rd(n, E1000_CTRL) & E1000_CTRL_RST) {
        if (now_ms() - t0 > POLL_TIMEOUT_MS) { bad("e1000e: reset did not complete"); return -1; }
        usleep(1000);
    }
    nic_wr(n, E1000_IMC, 0xffffffffu);
    (void)nic_rd(n, E1000_ICR); /* read to clear */
    nic_wr(n, E1000_CTRL, nic_rd(n, E1000_CTRL) | E1000_CTRL_SLU);
    t0 = now_ms();
    while (!(nic_rd(n, E1000_STATUS) & E1000_STATUS_LU) && now_ms() - t0 < POLL_TIMEOUT_MS) usleep(10000);
    uint32_t ral = nic_rd(n, E1000_RAL0), rah = nic_rd(n, E1000_RAH0);
    for (int i = 0; i < 4; i++) n->mac[i] = (uint8_t)(ral >> (8 * i));
    n->mac[4] = (uint8_t)rah;
    n->mac[5] = (uint8_t)(rah >> 8);
    memset(n->d->dma, 0, DMA_SIZE);
    nic_wr(n, E1000_TDBAL, (uint32_t)(n->d->iova + OFF_DESC));
    nic_wr(n, E1000_TDBAH, (uint32_t)((n->d->iova + OFF_DESC) >> 32));
    nic_wr(n, E1000_TDLEN, E1000_RING * sizeof(struct e1000_tx_desc));
    nic_wr(n, E1000_TDH, 0);
    nic_wr(n, E1000_TDT, 0);
    n->tail = 0;
    nic_wr(n, E1000_TIPG, E1000_TIPG_DEFAULT);
    nic_wr(n, E1000_TCTL, E1000_TCTL_EN | E1000_TCTL_PSP | E1000_TCTL_CT | E1000_TCTL_COLD);
    uint32_t status = nic_rd(n, E1000_STATUS);
    if (verbose)
        say("e1000e ready: mac %02x:%02x:%02x:%02x:%02x:%02x link %s (STATUS 0x%08x)", n->mac[0], n->mac[1],
            n->mac[2], n->mac[3], n->mac[4], n->mac[5], (status & E1000_STATUS_LU) ? "up" : "down", status);
    if (!(status & E1000_STATUS_LU)) { bad("e1000e: no link"); return -1; }
    return 0;
}

/* Our frame buffer of ring slot `slot`: a broadcast frame (ethertype 0x88b5, IEEE 802 local
 * experimental) whose payload is "SWIFTVMM-NESTED-TX TAG INDEX"; returns its IOVA. */
static uint64_t nic_frame(struct nic *n, uint16_t slot, const char *tag, int index)
{
    uint8_t *f = n->d->dma + E1000_OFF_FRAMES + (size_t)slot * 0x100;
    memset(f, 0, 0x100);
    memset(f, 0xff, 6);
    memcpy(f + 6, n->mac, 6);
    f[12] = 0x88;
    f[13] = 0xb5;
    snprintf((char *)f + 14, FRAME_LEN - 14, "SWIFTVMM-NESTED-TX %s %d", tag, index);
    return n->d->iova + E1000_OFF_FRAMES + (uint64_t)slot * 0x100;
}

/* A one-frame transmit descriptor for the buffer at `iova`, write-back requested. */
static struct e1000_tx_desc nic_desc(uint64_t iova)
{
    return (struct e1000_tx_desc){
        .addr = iova,
        .length = FRAME_LEN,
        .cmd = E1000_TXD_CMD_EOP | E1000_TXD_CMD_IFCS | E1000_TXD_CMD_RS,
    };
}

/* Queue `count` broadcast frames (ethertype 0x88b5, IEEE 802 local experimental), the
 * buffer of each at buffer_iova (0: our own mapped frame buffers), and wait for the
 * descriptors' DD bits. Returns how many completed. */
static int nic_send(struct nic *n, int count, uint64_t buffer_iova, const char *tag, int wait_ms)
{
    struct e1000_tx_desc *ring = (void *)(n->d->dma + OFF_DESC);
    uint16_t first = n->tail;
    for (int i = 0; i < count; i++) {
        uint16_t slot = (uint16_t)((first + i) % E1000_RING);
        uint64_t own = nic_frame(n, slot, tag, i);
        ring[slot] = nic_desc(buffer_iova ? buffer_iova : own);
    }
    n->tail = (uint16_t)((first + count) % E1000_RING);
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* descriptors before the tail write */
    nic_wr(n, E1000_TDT, n->tail);
    int done = 0;
    uint64_t t0 = now_ms();
    for (;;) {
        done = 0;
        for (int i = 0; i < count; i++)
            if (*(volatile uint8_t *)&ring[(first + i) % E1000_RING].status & E1000_TXD_STAT_DD) done++;
        if (done == count || now_ms() - t0 > (uint64_t)wait_ms) break;
        usleep(1000);
    }
    return done;
}

/* The benchmark: `total` frames through the ring, refilled as the device hands slots back
 * (DD), one tail write per refill; the time from the first tail write to the last DD. */
static int nic_bench(struct nic *n, uint64_t total)
{
    struct e1000_tx_desc *ring = (void *)(n->d->dma + OFF_DESC);
    for (uint16_t slot = 0; slot < E1000_RING; slot++) (void)nic_frame(n, slot, "bench", slot);
    uint64_t queued = 0, done = 0;
    uint16_t clean = n->tail; /* the oldest slot not yet handed back */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t last_progress = now_ms();
    while (done < total) {
        /* Fill every free slot but one (tail == head means empty), then one tail write. */
        int added = 0;
        while (queued < total && (uint16_t)((n->tail + 1) % E1000_RING) != clean) {
            uint16_t slot = n->tail;
            ring[slot] = nic_desc(n->d->iova + E1000_OFF_FRAMES + (uint64_t)slot * 0x100);
            n->tail = (uint16_t)((slot + 1) % E1000_RING);
            queued++;
            added++;
        }
        if (added) {
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            nic_wr(n, E1000_TDT, n->tail);
        }
        while (clean != n->tail && (*(volatile uint8_t *)&ring[clean].status & E1000_TXD_STAT_DD)) {
            clean = (uint16_t)((clean + 1) % E1000_RING);
            done++;
            last_progress = now_ms();
        }
        if (now_ms() - last_progress > POLL_TIMEOUT_MS) {
            bad("e1000e txbench stalled: %llu of %llu frames done", (unsigned long long)done, (unsigned long long)total);
            return -1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    say("e1000e txbench frames=%llu secs=%.3f fps=%.0f", (unsigned long long)total, secs, (double)total / secs);
    return 0;
}

/* nested-vfio on an e1000e: K good frames, one frame from an unmapped IOVA (the lab host's
 * IOMMU faults it: the guest's mapping went through the VMM into the host IOAS), then a
 * device reset and K good frames again. */
static int e1000e_main(struct dev *d, uint64_t iova, uint64_t unmapped, int frames, uint64_t bench)
{
    if (frames < 1 || frames > E1000_RING - 2) { fprintf(stderr, "nested-vfio: --frames 1..%d\n", E1000_RING - 2); return 2; }
    if (bench > 100000000) { fprintf(stderr, "nested-vfio: --bench-frames 1..100000000\n"); return 2; }
    if (open_device(d, iova, 1) < 0) goto out;
    uint16_t vendor = (uint16_t)cfg_read(d, PCI_VENDOR_ID, 2), device = (uint16_t)cfg_read(d, PCI_DEVICE_ID, 2);
    say("pci %04x:%04x", vendor, device);
    if (vendor != 0x8086 || device != 0x10d3) { bad("%s is not an 82574 (8086:10d3)", d->bdf); goto out; }
    struct region *bar0 = &d->bar[0];
    if (bar0->size < 0x20000) { bad("BAR0 is 0x%llx bytes, not 128 KiB", (unsigned long long)bar0->size); goto out; }
    if (bar0->flags & VFIO_REGION_INFO_FLAG_MMAP) {
        void *p = mmap(NULL, bar0->size, PROT_READ | PROT_WRITE, MAP_SHARED, d->device, (off_t)bar0->offset);
        if (p != MAP_FAILED) bar0->map = p;
    }
    cfg_write(d, PCI_COMMAND, 2, cfg_read(d, PCI_COMMAND, 2) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    struct nic n = { .d = d, .bar0 = bar0 };
    if (nic_init(&n, 1) < 0) goto out;
    if (bench) {
        nic_bench(&n, bench);
        goto stop;
    }

    int ok = nic_send(&n, frames, 0, "good", POLL_TIMEOUT_MS);
    if (ok == frames) say("e1000e tx %d frames ok", frames);
    else bad("e1000e tx FAILED: %d of %d frames done", ok, frames);

    ok = nic_send(&n, 1, unmapped, "unmapped", 2000);
    say("e1000e tx from unmapped iova 0x%llx: descriptor %s (the host IOMMU faults the read)",
        (unsigned long long)unmapped, ok ? "written back" : "not written back");

    if (nic_init(&n, 0) < 0) goto out;
    ok = nic_send(&n, frames, 0, "after-reset", POLL_TIMEOUT_MS);
    if (ok == frames) say("e1000e tx after reset %d frames ok", frames);
    else bad("e1000e tx after reset FAILED: %d of %d frames done", ok, frames);
stop:
    nic_wr(&n, E1000_TCTL, 0);
    nic_wr(&n, E1000_CTRL, nic_rd(&n, E1000_CTRL) | E1000_CTRL_RST);
    usleep(10000);
out:
    close_device(d);
    if (failures) say("result FAILED (%d failures)", failures);
    else say("result ok");
    return failures ? 1 : 0;
}

static uint64_t parse_u64(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end || end == s) { fprintf(stderr, "nested-vfio: bad number '%s'\n", s); exit(2); }
    return v;
}

int main(int argc, char **argv)
{
    uint64_t sector = 8, iova = 0x10000000, unmapped = 0x20000000, cycles = 3, frames = 8, bench = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: nested-vfio BDF [--sector N] [--cycles N] [--frames N] [--iova IOVA] [--unmapped IOVA] [--bench-frames N]\n");
        return 2;
    }
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--sector")) sector = parse_u64(argv[i + 1]);
        else if (!strcmp(argv[i], "--frames")) frames = parse_u64(argv[i + 1]);
        else if (!strcmp(argv[i], "--cycles")) cycles = parse_u64(argv[i + 1]);
        else if (!strcmp(argv[i], "--iova")) iova = parse_u64(argv[i + 1]);
        else if (!strcmp(argv[i], "--unmapped")) unmapped = parse_u64(argv[i + 1]);
        else if (!strcmp(argv[i], "--bench-frames")) bench = parse_u64(argv[i + 1]);
        else { fprintf(stderr, "nested-vfio: unknown option %s\n", argv[i]); return 2; }
    }
    if (iova & 0xfff || (unmapped >= iova && unmapped < iova + DMA_SIZE)) {
        fprintf(stderr, "nested-vfio: --iova must be page aligned and --unmapped outside it\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct dev d = { .bdf = argv[1], .container = -1, .group = -1, .device = -1 };
    char path[PATH_MAX], id[16] = "";
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/device", d.bdf);
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(id, sizeof id, f)) id[0] = 0;
        fclose(f);
    }
    if (!strncmp(id, "0x10d3", 6)) /* an 82574 (e1000e): the transmit test */
        return e1000e_main(&d, iova, unmapped, (int)frames, bench);

    /* 1. Set up, read the known sector. */
    if (open_device(&d, iova, 1) < 0 || find_virtio_caps(&d, 1) < 0 || virtio_init(&d, 1) < 0) {
        shutdown_device(&d);
        say("result FAILED (%d failures)", failures);
        return 1;
    }
    read_and_report(&d, sector, "blk read");

    /* 2. Isolation: the data buffer at an IOVA that was never mapped. */
    int st = blk_read(&d, sector, unmapped);
    uint8_t ds = (uint8_t)CREAD(&d, device_status);
    if (st == VIRTIO_BLK_S_IOERR && !(ds & VIRTIO_CONFIG_S_NEEDS_RESET)) {
        say("blk unmapped iova 0x%llx -> status %d (IOERR) ok", (unsigned long long)unmapped, st);
    } else if (st < 0 && (ds & VIRTIO_CONFIG_S_NEEDS_RESET)) {
        bad("blk unmapped iova 0x%llx -> no completion, device NEEDS_RESET (status 0x%02x): not IOERR",
            (unsigned long long)unmapped, ds);
        virtio_init(&d, 0); /* recover, so the next steps still say something */
    } else {
        bad("blk unmapped iova 0x%llx -> status %d device_status 0x%02x: expected %d (IOERR)",
            (unsigned long long)unmapped, st, ds, VIRTIO_BLK_S_IOERR);
    }
    if (st == VIRTIO_BLK_S_OK) bad("the device wrote through an unmapped IOVA");
    read_and_report(&d, sector, "blk read after fault");
    shutdown_device(&d);

    /* 3. Detach/attach cycles: everything closed and set up again. */
    for (uint64_t c = 1; c <= cycles; c++) {
        int before = failures;
        if (open_device(&d, iova, 0) == 0 && find_virtio_caps(&d, 0) == 0 && virtio_init(&d, 0) == 0)
            read_and_report(&d, sector, "blk read");
        else if (failures == before)
            failures++;
        shutdown_device(&d);
        if (failures == before) say("cycle %llu ok", (unsigned long long)c);
        else say("cycle %llu FAILED", (unsigned long long)c);
    }
    if (failures) say("result FAILED (%d failures)", failures);
    else say("result ok");
    return failures ? 1 : 0;
}
