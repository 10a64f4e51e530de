import XCTest
@testable import VFIOUser

/// Byte layouts from QEMU's docs/interop/vfio-user.rst (version 0.2), field by
/// field, and the decoders' answers to hostile bytes.
final class MessageTests: XCTestCase {
    func testHeaderLayout() throws {
        let h = VFIOUserHeader(messageID: 0x1234, command: 5, size: 0x30, flags: 0x21, error: 22)
        XCTAssertEqual(h.encoded(), [0x34, 0x12, 0x05, 0x00, 0x30, 0, 0, 0, 0x21, 0, 0, 0, 22, 0, 0, 0])
        let back = try VFIOUserHeader.decode(h.encoded())
        XCTAssertEqual(back, h)
        XCTAssertTrue(back.isReply)
        XCTAssertTrue(back.reportsError)
        XCTAssertFalse(back.wantsNoReply)
        XCTAssertTrue(try VFIOUserHeader.decode(VFIOUserHeader(messageID: 1, command: 1, size: 16, flags: 0x10).encoded()).wantsNoReply)
    }

    func testHeaderRejectsShortUnknownTypeAndUndersize() {
        XCTAssertThrowsError(try VFIOUserHeader.decode([UInt8](repeating: 0, count: 15)))
        XCTAssertThrowsError(try VFIOUserHeader.decode(VFIOUserHeader(messageID: 1, command: 1, size: 16, flags: 2).encoded())) { e in
            XCTAssertTrue("\(e)".contains("message type 2"), "\(e)")
        }
        XCTAssertThrowsError(try VFIOUserHeader.decode(VFIOUserHeader(messageID: 1, command: 9, size: 15).encoded())) { e in
            XCTAssertTrue("\(e)".contains("REGION_READ with a message size of 15"), "\(e)")
        }
    }

    func testCommandNumbers() {
        let expected: [(VFIOUserCommand, UInt16)] = [
            (.version, 1), (.dmaMap, 2), (.dmaUnmap, 3), (.deviceGetInfo, 4), (.deviceGetRegionInfo, 5),
            (.deviceGetRegionIOFDs, 6), (.deviceGetIRQInfo, 7), (.deviceSetIRQs, 8), (.regionRead, 9),
            (.regionWrite, 10), (.dmaRead, 11), (.dmaWrite, 12), (.deviceReset, 13), (.regionWriteMulti, 15),
            (.deviceFeature, 16), (.migDataRead, 17), (.migDataWrite, 18),
        ]
        for (c, n) in expected { XCTAssertEqual(c.rawValue, n, c.name) }
        XCTAssertEqual(VFIOUserCommand.allCases.count, expected.count)
        XCTAssertEqual(VFIOUserCommand.name(of: 14), "command 14")
    }

    func testVersionLayoutAndJSON() throws {
        let v = VFIOUserVersion(major: 0, minor: 2, json: "{}")
        XCTAssertEqual(v.encoded(), [0, 0, 2, 0, 0x7B, 0x7D, 0])
        XCTAssertEqual(try VFIOUserVersion.decode(v.encoded()), v)
        XCTAssertEqual(try VFIOUserVersion.decode([0, 0, 1, 0]), VFIOUserVersion(major: 0, minor: 1, json: nil))
        XCTAssertThrowsError(try VFIOUserVersion.decode([0, 0, 2])) // short
        XCTAssertThrowsError(try VFIOUserVersion.decode([0, 0, 2, 0, 0x7B, 0x7D])) { e in // no NUL
            XCTAssertTrue("\(e)".contains("NUL"), "\(e)")
        }
        XCTAssertThrowsError(try VFIOUserVersion.decode([0, 0, 2, 0, 0x7B, 0, 0x7D, 0])) // NUL inside
        XCTAssertThrowsError(try VFIOUserVersion.decode([0, 0, 2, 0, 0xFF, 0xFE, 0])) // not UTF-8
    }

    func testDMAMapAndUnmapLayout() throws {
        let map = VFIOUserDMAMap(flags: [.readable, .writable], offset: 0x1000, address: 0x8000_0000, size: 0x20_0000)
        let b = map.encoded()
        XCTAssertEqual(b.count, 32)
        XCTAssertEqual(Array(b[0..<4]), [32, 0, 0, 0]) // argsz
        XCTAssertEqual(Array(b[4..<8]), [3, 0, 0, 0]) // flags
        XCTAssertEqual(Array(b[8..<16]), [0, 0x10, 0, 0, 0, 0, 0, 0]) // offset
        XCTAssertEqual(Array(b[16..<24]), [0, 0, 0, 0x80, 0, 0, 0, 0]) // address
        XCTAssertEqual(Array(b[24..<32]), [0, 0, 0x20, 0, 0, 0, 0, 0]) // size
        XCTAssertEqual(try VFIOUserDMAMap.decode(b), map)
        let unmap = VFIOUserDMAUnmap(address: 0x4000, size: 0x1000)
        XCTAssertEqual(unmap.encoded(), [24, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(try VFIOUserDMAUnmap.decode(unmap.encoded()), unmap)
        XCTAssertThrowsError(try VFIOUserDMAUnmap.decode(Array(unmap.encoded().prefix(23))))
    }

    func testDeviceAndIRQInfoLayout() throws {
        let info = try VFIOUserDeviceInfo.decode([16, 0, 0, 0, 3, 0, 0, 0, 9, 0, 0, 0, 5, 0, 0, 0])
        XCTAssertEqual(info, VFIOUserDeviceInfo(argsz: 16, flags: 3, regionCount: 9, irqCount: 5))
        XCTAssertTrue(info.canReset)
        XCTAssertTrue(info.isPCI)
        XCTAssertEqual(VFIOUserDeviceInfo().encoded(), [16, 0, 0, 0] + [UInt8](repeating: 0, count: 12))
        XCTAssertThrowsError(try VFIOUserDeviceInfo.decode([16, 0, 0, 0])) { e in
            XCTAssertTrue("\(e)".contains("DEVICE_GET_INFO: 4 bytes of payload"), "\(e)")
        }
        let irq = VFIOUserIRQInfo(argsz: 16, flags: 0x9, index: 0, count: 1)
        XCTAssertEqual(irq.encoded(), [16, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0])
        XCTAssertEqual(try VFIOUserIRQInfo.decode(irq.encoded()), irq)
        let set = VFIOUserSetIRQs(flags: VFIOUserSetIRQs.dataEventFD | VFIOUserSetIRQs.actionTrigger, index: 0, start: 0, count: 1)
        XCTAssertEqual(set.encoded(), [20, 0, 0, 0, 0x24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0])
    }

    /// A region info reply with a sparse-mmap capability: the sample
    /// server's BAR1 (16 KiB, areas [0, 0x1000) and [0x2000, 0x3000)).
    static func regionReply(index: UInt32 = 1, size: UInt64 = 0x4000, capOffset: UInt32 = 32, next: UInt32 = 0,
                            areas: [(UInt64, UInt64)] = [(0, 0x1000), (0x2000, 0x1000)], count: UInt32? = nil) -> [UInt8] {
        var b: [UInt8] = []
        b.put32(UInt32(32 + 16 + areas.count * 16)) // argsz
        b.put32(VFIOUserRegionInfo.flagRead | VFIOUserRegionInfo.flagWrite | VFIOUserRegionInfo.flagMmap | VFIOUserRegionInfo.flagCaps)
        b.put32(index)
        b.put32(capOffset)
        b.put64(size)
        b.put64(0) // offset
        b.put16(VFIOUserRegionInfo.capSparseMmap)
        b.put16(1) // version
        b.put32(next)
        b.put32(count ?? UInt32(areas.count))
        b.put32(0) // reserved
        for (o, s) in areas {
            b.put64(o)
            b.put64(s)
        }
        return b
    }

    func testRegionInfoWithSparseAreas() throws {
        XCTAssertEqual(VFIOUserRegionInfo.request(index: 7, argsz: 288),
                       [0x20, 1, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0] + [UInt8](repeating: 0, count: 20))
        let info = try VFIOUserRegionInfo.decode(Self.regionReply())
        XCTAssertEqual(info.index, 1)
        XCTAssertEqual(info.size, 0x4000)
        XCTAssertTrue(info.mappable && info.readable && info.writable)
        XCTAssertEqual(info.sparseAreas, [VFIOUserSparseArea(offset: 0, size: 0x1000), VFIOUserSparseArea(offset: 0x2000, size: 0x1000)])
    }

    func testRegionInfoHostileCapabilityChains() {
        // A capability inside the fixed fields, a loop, areas outside the region, a huge count, a short chain.
        XCTAssertThrowsError(try VFIOUserRegionInfo.decode(Self.regionReply(capOffset: 16)))
        XCTAssertThrowsError(try VFIOUserRegionInfo.decode(Self.regionReply(next: 32))) { e in
            XCTAssertTrue("\(e)".contains("points back"), "\(e)")
        }
        XCTAssertThrowsError(try VFIOUserRegionInfo.decode(Self.regionReply(areas: [(0x3000, 0x2000)]))) { e in
            XCTAssertTrue("\(e)".contains("outside the region"), "\(e)")
        }
        XCTAssertThrowsError(try VFIOUserRegionInfo.decode(Self.regionReply(areas: [(UInt64.max, 2)])))
        XCTAssertThrowsError(try VFIOUserRegionInfo.decode(Self.regionReply(count: 0xFFFF_FFFF)))
        XCTAssertThrowsError(try VFIOUserRegionInfo.decode(Self.regionReply(count: 3))) // claims 3, carries 2
        XCTAssertThrowsError(try VFIOUserRegionInfo.decode(Self.regionReply(capOffset: 0x1000)))
        // Without the caps flag the offset is ignored, as VFIO does.
        var plain = Self.regionReply()
        plain[4] = UInt8(VFIOUserRegionInfo.flagRead)
        XCTAssertNil(try? VFIOUserRegionInfo.decode(plain).sparseAreas ?? nil)
    }

    func testRegionAndDMAAccessLayout() throws {
        let w = VFIOUserRegionAccess(offset: 8, region: 0, count: 8, data: [1, 2, 3, 4, 5, 6, 7, 8])
        XCTAssertEqual(w.encoded(), [8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
        XCTAssertEqual(try VFIOUserRegionAccess.decode(w.encoded(), what: "REGION_WRITE"), w)
        let d = VFIOUserDMAAccess(address: 0x1000, count: 2, data: [0xAA, 0xBB])
        XCTAssertEqual(d.encoded(), [0, 0x10, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0xAA, 0xBB])
        XCTAssertEqual(try VFIOUserDMAAccess.decode(d.encoded(), what: "DMA_WRITE"), d)
        XCTAssertThrowsError(try VFIOUserDMAAccess.decode([0, 0, 0], what: "DMA_READ"))
    }

    func testCapabilitiesJSON() throws {
        let sample = #"{ "capabilities": { "max_msg_fds": 8, "max_data_xfer_size": 1048576, "migration": { "pgsize": 4096 } } }"#
        let caps = try VFIOUserCapabilities.parse(sample)
        XCTAssertEqual(caps.maxMessageFDs, 8)
        XCTAssertEqual(caps.maxDataTransferSize, 1 << 20)
        XCTAssertEqual(caps.pageSizes, 4096)
        XCTAssertFalse(caps.twinSocket)
        XCTAssertEqual(caps.unused, ["migration"])
        let twin = try VFIOUserCapabilities.parse(#"{"capabilities":{"twin_socket":{"supported":true,"fd_index":0},"future_thing":[1,2]}}"#)
        XCTAssertTrue(twin.twinSocket)
        XCTAssertEqual(twin.twinSocketFDIndex, 0)
        XCTAssertEqual(twin.unused, ["future_thing"])
        XCTAssertEqual(twin.maxMessageFDs, 1) // the spec's default
        XCTAssertEqual(try VFIOUserCapabilities.parse("{}"), VFIOUserCapabilities())
        // Clamped: a peer cannot make us size buffers by its word.
        XCTAssertEqual(try VFIOUserCapabilities.parse(#"{"capabilities":{"max_data_xfer_size":18446744073709551615}}"#).maxDataTransferSize,
                       VFIOUserCapabilities.maxDataTransferLimit)
        for bad in [#"{"capabilities":{"max_msg_fds":-1}}"#, #"{"capabilities":{"max_msg_fds":"8"}}"#,
                    #"{"capabilities":{"max_data_xfer_size":0}}"#, #"{"capabilities":[]}"#, "not json", #"{"capabilities":{"twin_socket":true}}"#] {
            XCTAssertThrowsError(try VFIOUserCapabilities.parse(bad), bad) { e in
                XCTAssertTrue("\(e)".hasPrefix("malformed message from the vfio-user server: VERSION"), "\(e)")
            }
        }
        let mine = VFIOUserCapabilities.clientJSON(maxMessageFDs: 16, maxDataTransferSize: 1 << 20, twinSocket: true)
        XCTAssertEqual(mine, #"{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,"twin_socket":{"supported":true}}}"#)
        let parsed = try VFIOUserCapabilities.parse(mine)
        XCTAssertEqual(parsed.maxMessageFDs, 16)
        XCTAssertTrue(parsed.twinSocket)
    }
}
