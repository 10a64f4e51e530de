@testable import Virtio
import XCTest

/// The virtio-pci common configuration register semantics (§4.1.4.3) on the
/// register model alone; `VirtioPCIDeviceTests` repeats the key ones through
/// the BAR.
final class CommonConfigTests: XCTestCase {
    typealias O = VirtioPCICommonConfig.Offset
    let offered: UInt64 = VirtioSpec.Feature.version1 | VirtioSpec.Feature.eventIndex | 0b101

    private func make() -> VirtioPCICommonConfig {
        VirtioPCICommonConfig(offeredFeatures: offered, queueMaxSizes: [256, 64], msixVectors: 3)
    }

    @discardableResult
    private func w(_ c: inout VirtioPCICommonConfig, _ offset: Int, _ value: UInt64, _ width: Int) -> VirtioPCICommonConfig.Effect? {
        let bytes = (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
        return bytes.withUnsafeBytes { c.write(offset: UInt64(offset), data: $0) }
    }

    private func r(_ c: VirtioPCICommonConfig, _ offset: Int, _ width: Int) -> UInt64 {
        var bytes = [UInt8](repeating: 0, count: width)
        bytes.withUnsafeMutableBytes { c.read(offset: UInt64(offset), data: $0) }
        return bytes.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }

    func testLayoutMatchesTheSpecStructure() {
        // struct virtio_pci_common_cfg (§4.1.4.3): 0x3C bytes ending with queue_reset.
        XCTAssertEqual([O.deviceFeatureSelect, O.deviceFeature, O.driverFeatureSelect, O.driverFeature,
                        O.configMSIXVector, O.numQueues, O.deviceStatus, O.configGeneration, O.queueSelect,
                        O.queueSize, O.queueMSIXVector, O.queueEnable, O.queueNotifyOff, O.queueDesc,
                        O.queueDriver, O.queueDevice, O.queueNotifyData, O.queueReset, O.size],
                       [0x00, 0x04, 0x08, 0x0C, 0x10, 0x12, 0x14, 0x15, 0x16, 0x18, 0x1A, 0x1C, 0x1E, 0x20,
                        0x28, 0x30, 0x38, 0x3A, 0x3C])
    }

    func testInitialImageBytes() {
        let c = make()
        XCTAssertEqual(c.image(), [
            0, 0, 0, 0, /* device_feature (select 0) */ 0b101, 0, 0, 0x20,
            0, 0, 0, 0, 0, 0, 0, 0,
            0xFF, 0xFF, /* num_queues */ 2, 0, /* status */ 0, /* generation */ 0, /* select */ 0, 0,
            /* size */ 0, 1, /* vector */ 0xFF, 0xFF, /* enable */ 0, 0, /* notify_off */ 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            /* notify_data */ 0, 0, /* queue_reset */ 0, 0,
        ])
    }

    func testDeviceFeatureWindows() {
        var c = make()
        XCTAssertEqual(r(c, O.deviceFeature, 4), 0x2000_0005)
        w(&c, O.deviceFeatureSelect, 1, 4)
        XCTAssertEqual(r(c, O.deviceFeatureSelect, 4), 1)
        XCTAssertEqual(r(c, O.deviceFeature, 4), 1, "VERSION_1 is bit 32")
        w(&c, O.deviceFeatureSelect, 2, 4)
        XCTAssertEqual(r(c, O.deviceFeature, 4), 0, "0 past bit 63 (§4.1.4.3.1)")
        w(&c, O.deviceFeatureSelect, 0xFFFF_FFFF, 4)
        XCTAssertEqual(r(c, O.deviceFeature, 4), 0)
        w(&c, O.deviceFeature, 0xFFFF_FFFF, 4)
        XCTAssertEqual(r(c, O.deviceFeature, 4), 0, "read-only")
    }

    func testFeatureNegotiationRefusesUnofferedFeatures() {
        var c = make()
        w(&c, O.deviceStatus, 1 | 2, 1)
        w(&c, O.driverFeatureSelect, 0, 4)
        w(&c, O.driverFeature, 0b111, 4) // bit 1 (MULTIPORT) was not offered
        w(&c, O.driverFeatureSelect, 1, 4)
        w(&c, O.driverFeature, 1, 4)
        XCTAssertNil(w(&c, O.deviceStatus, 1 | 2 | 8, 1))
        XCTAssertEqual(r(c, O.deviceStatus, 1), 3, "FEATURES_OK not set: the driver sees it on re-read (§3.1.1)")

        w(&c, O.driverFeatureSelect, 0, 4)
        w(&c, O.driverFeature, 0b101, 4)
        w(&c, O.deviceStatus, 1 | 2 | 8, 1)
        XCTAssertEqual(r(c, O.deviceStatus, 1), 11)
        XCTAssertEqual(c.negotiatedFeatures, VirtioSpec.Feature.version1 | 0b101)

        // No new features after FEATURES_OK.
        w(&c, O.driverFeature, 0, 4)
        XCTAssertEqual(r(c, O.driverFeature, 4), 0b101)
    }

    func testVersion1IsMandatory() {
        var c = make()
        w(&c, O.driverFeature, 0b1, 4)
        w(&c, O.deviceStatus, 1 | 2 | 8, 1)
        XCTAssertEqual(r(c, O.deviceStatus, 1), 3, "no VIRTIO_F_VERSION_1: refused (§6.2)")
    }

    private func negotiated() -> VirtioPCICommonConfig {
        var c = make()
        w(&c, O.deviceStatus, 1 | 2, 1)
        w(&c, O.driverFeatureSelect, 1, 4)
        w(&c, O.driverFeature, 1, 4)
        w(&c, O.deviceStatus, 1 | 2 | 8, 1)
        return c
    }

    func testDriverOKNeedsFeaturesOK() {
        var c = make()
        XCTAssertEqual(w(&c, O.deviceStatus, 1 | 2 | 4, 1), .guestError("DRIVER_OK set without FEATURES_OK"))
        XCTAssertEqual(r(c, O.deviceStatus, 1), 3)
        var ok = negotiated()
        XCTAssertEqual(w(&ok, O.deviceStatus, 1 | 2 | 8 | 4, 1), .driverOK)
        XCTAssertEqual(w(&ok, O.deviceStatus, 1 | 2 | 8 | 4, 1), nil, "only the first time")
    }

    func testDriverCannotClearBitsOrSetNeedsReset() {
        var c = negotiated()
        w(&c, O.deviceStatus, 1, 1)
        XCTAssertEqual(r(c, O.deviceStatus, 1), 11, "bits stay set")
        w(&c, O.deviceStatus, 64 | 128, 1)
        XCTAssertEqual(r(c, O.deviceStatus, 1), 11 | 128, "FAILED sticks, DEVICE_NEEDS_RESET is the device's")
    }

    func testResetOnStatusZero() {
        var c = negotiated()
        w(&c, O.queueSelect, 1, 2)
        w(&c, O.queueSize, 16, 2)
        w(&c, O.queueMSIXVector, 2, 2)
        w(&c, O.queueEnable, 1, 2)
        w(&c, O.configMSIXVector, 0, 2)
        XCTAssertEqual(w(&c, O.deviceStatus, 0, 1), .reset)
        let generation = c.configGeneration
        c.reset()
        XCTAssertEqual(r(c, O.deviceStatus, 1), 0)
        XCTAssertEqual(r(c, O.configMSIXVector, 2), 0xFFFF, "unmapped on reset (§4.1.5.1.2.1)")
        XCTAssertEqual(r(c, O.queueSelect, 2), 0)
        w(&c, O.queueSelect, 1, 2)
        XCTAssertEqual(r(c, O.queueSize, 2), 64, "back to the maximum")
        XCTAssertEqual(r(c, O.queueEnable, 2), 0, "0 in queue_enable on reset (§4.1.4.3.1)")
        XCTAssertEqual(r(c, O.queueMSIXVector, 2), 0xFFFF)
        XCTAssertEqual(c.driverFeatures, 0)
        XCTAssertEqual(c.configGeneration, generation &+ 1)
    }

    func testQueueSizeIsWritableDownToAPowerOfTwo() {
        var c = make()
        XCTAssertEqual(r(c, O.queueSize, 2), 256)
        for (write, expect): (UInt64, UInt64) in [(128, 128), (100, 128), (0, 128), (512, 128), (1, 1), (256, 256), (3, 256)] {
            w(&c, O.queueSize, write, 2)
            XCTAssertEqual(r(c, O.queueSize, 2), expect, "after writing \(write)")
        }
        w(&c, O.queueSize, 2, 1)
        XCTAssertEqual(r(c, O.queueSize, 2), 256, "wrong width: ignored")
    }

    func testQueueSelectOutOfRange() {
        var c = make()
        w(&c, O.queueSelect, 2, 2)
        XCTAssertEqual(r(c, O.queueSize, 2), 0, "queue unavailable")
        XCTAssertEqual(r(c, O.queueMSIXVector, 2), 0xFFFF)
        XCTAssertEqual(r(c, O.queueEnable, 2), 0)
        w(&c, O.queueSize, 16, 2)
        w(&c, O.queueEnable, 1, 2)
        w(&c, O.queueDesc, 0x1000, 8)
        XCTAssertEqual(r(c, O.queueSize, 2), 0)
        XCTAssertEqual(r(c, O.queueDesc, 8), 0)
        XCTAssertEqual(c.queues.map(\.enabled), [false, false])
    }

    func testMSIXVectorsOutOfRangeReadNoVector() {
        var c = make()
        w(&c, O.configMSIXVector, 2, 2)
        XCTAssertEqual(r(c, O.configMSIXVector, 2), 2)
        w(&c, O.configMSIXVector, 3, 2)
        XCTAssertEqual(r(c, O.configMSIXVector, 2), 0xFFFF, "mapping failure (§4.1.5.1.2.1)")
        w(&c, O.queueMSIXVector, 1, 2)
        XCTAssertEqual(r(c, O.queueMSIXVector, 2), 1)
        w(&c, O.queueMSIXVector, 0x7FF, 2)
        XCTAssertEqual(r(c, O.queueMSIXVector, 2), 0xFFFF)
        w(&c, O.queueMSIXVector, 0xFFFF, 2)
        XCTAssertEqual(r(c, O.queueMSIXVector, 2), 0xFFFF, "unmapping is always allowed")
    }

    func testQueueAddressesIn64And32BitHalves() {
        var c = make()
        w(&c, O.queueDesc, 0x1122_3344_5566_7788, 8)
        XCTAssertEqual(r(c, O.queueDesc, 8), 0x1122_3344_5566_7788)
        w(&c, O.queueDriver, 0x9000_0000, 4)
        w(&c, O.queueDriver + 4, 0x1, 4)
        XCTAssertEqual(r(c, O.queueDriver, 8), 0x1_9000_0000)
        XCTAssertEqual(r(c, O.queueDriver + 4, 4), 1)
        w(&c, O.queueDevice + 4, 0xAB, 4)
        w(&c, O.queueDevice, 0xCD, 4)
        XCTAssertEqual(r(c, O.queueDevice, 8), 0xAB_0000_00CD)
        w(&c, O.queueDevice + 2, 0xFFFF, 2)
        XCTAssertEqual(r(c, O.queueDevice, 8), 0xAB_0000_00CD, "misaligned half: ignored")
    }

    func testQueueEnableFreezesTheQueueAndZeroIsIgnored() {
        var c = make()
        w(&c, O.queueSize, 32, 2)
        w(&c, O.queueDesc, 0x1000, 8)
        w(&c, O.queueEnable, 0, 2)
        XCTAssertEqual(r(c, O.queueEnable, 2), 0)
        w(&c, O.queueEnable, 2, 2)
        XCTAssertEqual(r(c, O.queueEnable, 2), 0, "only 1 enables")
        w(&c, O.queueEnable, 1, 2)
        XCTAssertEqual(r(c, O.queueEnable, 2), 1)
        w(&c, O.queueSize, 16, 2)
        w(&c, O.queueDesc, 0x2000, 8)
        w(&c, O.queueEnable, 0, 2)
        XCTAssertEqual(r(c, O.queueSize, 2), 32, "frozen once enabled")
        XCTAssertEqual(r(c, O.queueDesc, 8), 0x1000)
        XCTAssertEqual(r(c, O.queueEnable, 2), 1, "MUST NOT write 0: ignored")
        w(&c, O.queueMSIXVector, 1, 2)
        XCTAssertEqual(r(c, O.queueMSIXVector, 2), 1, "vectors may still move")
    }

    func testReadOnlyFieldsAndOddAccesses() {
        var c = make()
        w(&c, O.numQueues, 9, 2)
        w(&c, O.configGeneration, 9, 1)
        w(&c, O.queueNotifyOff, 9, 2)
        w(&c, O.queueReset, 1, 2)
        XCTAssertEqual(r(c, O.numQueues, 2), 2)
        XCTAssertEqual(r(c, O.configGeneration, 1), 0)
        XCTAssertEqual(r(c, O.queueReset, 2), 0, "VIRTIO_F_RING_RESET is not offered")
        w(&c, O.queueSelect, 1, 2)
        XCTAssertEqual(r(c, O.queueNotifyOff, 2), 1, "queue i notifies at i * multiplier")
        XCTAssertEqual(r(c, O.numQueues, 1), 2, "narrow reads see the low byte")
        XCTAssertEqual(r(c, 0x3C, 4), 0, "past the structure")
        XCTAssertEqual(r(c, 0x3A, 8), 0)
        XCTAssertNil(w(&c, 0x3C, 0, 1))
        XCTAssertNil(w(&c, O.deviceStatus, 0, 3), "odd width")
        var empty: [UInt8] = []
        XCTAssertNil(empty.withUnsafeBytes { c.write(offset: UInt64.max, data: $0) })
        empty.withUnsafeMutableBytes { c.read(offset: UInt64.max, data: $0) }
        var two = [UInt8](repeating: 1, count: 2)
        two.withUnsafeMutableBytes { c.read(offset: UInt64.max, data: $0) }
        XCTAssertEqual(two, [0, 0])
    }
}
