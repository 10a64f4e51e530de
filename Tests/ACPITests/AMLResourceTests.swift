import XCTest
@testable import ACPI

/// Resource descriptors, byte for byte, from ACPI 6.5 §6.4.
final class AMLResourceTests: XCTestCase {
    func testIOPort() throws {
        XCTAssertEqual(try AMLIOPort(fixed: 0x3F8, length: 8).encoded(),
                       [0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08])
        XCTAssertEqual(try AMLIOPort(decodes16Bit: false, minimum: 0x100, maximum: 0x1F0, alignment: 0x10, length: 4).encoded(),
                       [0x47, 0x00, 0x00, 0x01, 0xF0, 0x01, 0x10, 0x04])
        XCTAssertEqual(try AMLIOPort(fixed: 0xFFFF, length: 1).encoded(),
                       [0x47, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x01])
        XCTAssertThrowsError(try AMLIOPort(fixed: 0xFFFF, length: 2).encoded())
        XCTAssertThrowsError(try AMLIOPort(minimum: 0x200, maximum: 0x100, alignment: 1, length: 1).encoded())
    }

    func testIRQNoFlags() throws {
        XCTAssertEqual(try AMLIRQNoFlags([4]).encoded(), [0x22, 0x10, 0x00])
        XCTAssertEqual(try AMLIRQNoFlags([8]).encoded(), [0x22, 0x00, 0x01])
        XCTAssertEqual(try AMLIRQNoFlags([0, 15]).encoded(), [0x22, 0x01, 0x80])
        XCTAssertThrowsError(try AMLIRQNoFlags([16]).encoded())
        XCTAssertThrowsError(try AMLIRQNoFlags([]).encoded())
    }

    func testMemory32Fixed() throws {
        XCTAssertEqual(try AMLMemory32Fixed(readWrite: true, base: 0xFEC0_0000, length: 0x1000).encoded(),
                       [0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0xC0, 0xFE, 0x00, 0x10, 0x00, 0x00])
        XCTAssertEqual(try AMLMemory32Fixed(readWrite: false, base: 0xFFFF_F000, length: 0x1000).encoded(),
                       [0x86, 0x09, 0x00, 0x00, 0x00, 0xF0, 0xFF, 0xFF, 0x00, 0x10, 0x00, 0x00])
        XCTAssertThrowsError(try AMLMemory32Fixed(readWrite: true, base: 0xFFFF_F000, length: 0x2000).encoded())
    }

    func testWordBusNumber() throws {
        let d = try AMLAddressSpace.wordBusNumber(0...0xFF, usage: .producer)
        XCTAssertEqual(try d.encoded(), cat([0x88, 0x0D, 0x00, 0x02, 0x0C, 0x00],
                                        [0x00, 0x00], [0x00, 0x00], [0xFF, 0x00], [0x00, 0x00], [0x00, 0x01]))
    }

    func testWordIO() throws {
        let d = try AMLAddressSpace.wordIO(0x1000...0xFFFF, usage: .producer)
        XCTAssertEqual(try d.encoded(), cat([0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03],
                                        [0x00, 0x00], [0x00, 0x10], [0xFF, 0xFF], [0x00, 0x00], [0x00, 0xF0]))
        let isa = try AMLAddressSpace.wordIO(0...0xCF7, usage: .consumer, isaRanges: .isaOnly)
        XCTAssertEqual(try isa.encoded(), cat([0x88, 0x0D, 0x00, 0x01, 0x0D, 0x02],
                                          [0x00, 0x00], [0x00, 0x00], [0xF7, 0x0C], [0x00, 0x00], [0xF8, 0x0C]))
    }

    func testDWordMemory() throws {
        let d = try AMLAddressSpace.dwordMemory(0xC000_0000...0xFEBF_FFFF, usage: .producer,
                                                cacheability: .nonCacheable, readWrite: true)
        XCTAssertEqual(try d.encoded(), cat([0x87, 0x17, 0x00, 0x00, 0x0C, 0x01],
                                        [0x00, 0x00, 0x00, 0x00], [0x00, 0x00, 0x00, 0xC0], [0xFF, 0xFF, 0xBF, 0xFE],
                                        [0x00, 0x00, 0x00, 0x00], [0x00, 0x00, 0xC0, 0x3E]))
    }

    func testQWordMemory() throws {
        let d = try AMLAddressSpace.qwordMemory(0x1_0000_0000...0x1_FFFF_FFFF, usage: .consumer,
                                                cacheability: .prefetchable, readWrite: true)
        let zero8 = [UInt8](repeating: 0, count: 8)
        XCTAssertEqual(try d.encoded(), cat([0x8A, 0x2B, 0x00, 0x00, 0x0D, 0x07],
                                        zero8,
                                        [0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00],
                                        [0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x00, 0x00],
                                        zero8,
                                        [0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00]))
        XCTAssertEqual(try d.encoded().count, 46)
        let cacheableRO = try AMLAddressSpace.qwordMemory(0...0xFFF, usage: .producer, cacheability: .cacheable, readWrite: false)
        XCTAssertEqual(try cacheableRO.encoded()[5], 0x02)
    }

    func testAddressSpaceRejectsValuesTheWidthCannotHold() {
        let wide = AMLAddressSpace(width: .word, kind: .busNumber, usage: .producer, minimumFixed: false,
                                   maximumFixed: false, granularity: 0, minimum: 0, maximum: 0x1_0000, length: 1)
        XCTAssertThrowsError(try wide.encoded())
        let dword = AMLAddressSpace(width: .dword, kind: .memory(.cacheable, readWrite: true), usage: .producer,
                                    minimumFixed: false, maximumFixed: false, granularity: 0,
                                    minimum: 0, maximum: 0x1_0000_0000, length: 1)
        XCTAssertThrowsError(try dword.encoded())
        XCTAssertThrowsError(try AMLAddressSpace.qwordMemory(0...UInt64.max, usage: .producer,
                                                             cacheability: .cacheable, readWrite: true))
    }

    func testAddressSpaceRejectsInconsistentFixedRange() {
        let bad = AMLAddressSpace(width: .word, kind: .io(.entire), usage: .producer, minimumFixed: true,
                                  maximumFixed: true, granularity: 0, minimum: 0x10, maximum: 0x1F, length: 0x20)
        XCTAssertThrowsError(try bad.encoded())
        let reversed = AMLAddressSpace(width: .word, kind: .io(.entire), usage: .producer, minimumFixed: false,
                                       maximumFixed: false, granularity: 0, minimum: 0x20, maximum: 0x10, length: 0)
        XCTAssertThrowsError(try reversed.encoded())
    }

    func testAddressSpaceGeneralFlags() throws {
        let d = AMLAddressSpace(width: .word, kind: .busNumber, usage: .consumer, minimumFixed: false,
                                maximumFixed: false, subtractiveDecode: true, granularity: 0,
                                minimum: 0, maximum: 0xFF, length: 0)
        XCTAssertEqual(try d.encoded()[4], 0x03)
    }

    func testResourceTemplateEndsWithEndTag() throws {
        let crs = AMLResourceTemplate([AMLIOPort(fixed: 0x3F8, length: 8), AMLIRQNoFlags([4])])
        let resources: [UInt8] = [0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08, 0x22, 0x10, 0x00, 0x79, 0x00]
        XCTAssertEqual(try crs.resourceBytes(), resources)
        XCTAssertEqual(try crs.encoded(), cat([0x11, 0x10, 0x0A, 0x0D], resources))
        XCTAssertEqual(try AMLResourceTemplate([]).encoded(), [0x11, 0x05, 0x0A, 0x02, 0x79, 0x00])
    }
}
