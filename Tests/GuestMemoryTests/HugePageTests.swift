import GuestMemory
import HostSys
import XCTest

/// Guest RAM on 2 MiB hugetlbfs pages. Hosts here usually have none
/// reserved, so the error path is what runs everywhere; the success path runs
/// when the 2 MiB pool has free pages.
final class HugePageTests: XCTestCase {
    private static let twoMiB = 2 << 20

    /// Pages the 2 MiB pool cannot give, so that mapping them must fail
    /// (nil when the kernel may create surplus pages on demand).
    private func moreThanFree() throws -> Int {
        if let overcommit = try? HostFiles.readAll("/proc/sys/vm/nr_overcommit_hugepages", limit: 4096),
           let n = String(decoding: overcommit, as: UTF8.self).split(whereSeparator: \.isWhitespace).first.flatMap({ Int($0) }),
           n > 0 {
            throw XCTSkip("vm.nr_overcommit_hugepages is \(n): the kernel may allocate surplus pages, so no request is sure to fail")
        }
        return (HugePageError.readPool()?.free ?? 0) + 1
    }

    func testTooFewFreeHugePagesSaysHowToReserveThem() throws {
        let pages = try moreThanFree()
        XCTAssertThrowsError(try SharedMemoryMapping(name: "swiftvmm-test", size: pages * Self.twoMiB, hugePages: true)) { e in
            guard let h = e as? HugePageError else { return XCTFail("not a HugePageError: \(e)") }
            XCTAssertTrue([ENOMEM, EINVAL].contains(h.errno), "\(h.errno)")
            XCTAssertEqual(h.bytes, pages * Self.twoMiB)
            XCTAssertEqual(h.pagesNeeded, pages)
            XCTAssertTrue(h.description.hasPrefix("no free 2 MiB hugepages: reserve them with `echo "), h.description)
            XCTAssertTrue(h.description.contains(" > /proc/sys/vm/nr_hugepages`"), h.description)
            XCTAssertTrue(h.description.contains("swiftvmm-test"), h.description)
        }
    }

    func testGuestRAMPassesHugePagesToEverySlot() throws {
        let pages = try moreThanFree()
        let map = GuestMemoryMap(ramBytes: UInt64(pages * Self.twoMiB))
        XCTAssertThrowsError(try GuestRAM(map: map, hugePages: true)) { e in
            XCTAssertTrue(e is HugePageError, "\(e)")
        }
        let ordinary = try GuestRAM(map: GuestMemoryMap(ramBytes: 4 << 20))
        XCTAssertFalse(ordinary.hugePages)
        XCTAssertEqual(ordinary.slots.map(\.mapping.hugePages), [false])
    }

    func testMessageSuggestsPagesInUsePlusNeeded() {
        let e = HugePageError(errno: ENOMEM, operation: "mmap", name: "swiftvmm-ram0", bytes: 512 << 20, pool: (total: 100, free: 40))
        XCTAssertEqual(e.pagesNeeded, 256)
        XCTAssertEqual(e.suggestedReservation, "316")
        XCTAssertEqual(e.description, "no free 2 MiB hugepages: reserve them with `echo 316 > /proc/sys/vm/nr_hugepages` "
            + "(swiftvmm-ram0: 512 MiB needs 256 pages, 40 free of 100; mmap: Cannot allocate memory, ENOMEM)")
        let unknown = HugePageError(errno: EINVAL, operation: "memfd_create", name: "x", bytes: 2 << 20, pool: nil)
        XCTAssertEqual(unknown.description, "no free 2 MiB hugepages: reserve them with `echo N > /proc/sys/vm/nr_hugepages` "
            + "(x: 2 MiB needs 1 page; memfd_create: Invalid argument, EINVAL)")
    }

    func testSizeZeroIsRefusedEitherWay() {
        XCTAssertThrowsError(try SharedMemoryMapping(name: "z", size: 0, hugePages: true)) { e in
            XCTAssertEqual((e as? SysError)?.errno, EINVAL)
        }
        XCTAssertThrowsError(try SharedMemoryMapping(name: "z", size: Int.max, hugePages: true)) { e in
            XCTAssertEqual((e as? SysError)?.errno, EINVAL)
        }
    }

    func testOrdinaryMappingIsNotRounded() throws {
        let m = try SharedMemoryMapping(name: "swiftvmm-test", size: 4096)
        XCTAssertEqual(m.size, 4096)
        XCTAssertFalse(m.hugePages)
    }

    /// Needs a free 2 MiB page: `echo 1 > /proc/sys/vm/nr_hugepages`.
    func testHugePageMappingIsRoundedUpTo2MiB() throws {
        guard let pool = HugePageError.readPool(), pool.free >= 1 else {
            throw XCTSkip("no free 2 MiB hugepage on this host (echo 1 > /proc/sys/vm/nr_hugepages to run this)")
        }
        let m = try SharedMemoryMapping(name: "swiftvmm-test", size: 4096, hugePages: true)
        XCTAssertEqual(m.size, Self.twoMiB)
        XCTAssertTrue(m.hugePages)
        m.pointer.storeBytes(of: 0xA5, toByteOffset: Self.twoMiB - 1, as: UInt8.self)
        XCTAssertEqual(m.pointer.load(fromByteOffset: Self.twoMiB - 1, as: UInt8.self), 0xA5)
    }
}
