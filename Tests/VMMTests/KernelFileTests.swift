import Boot
import Foundation
import HostSys
import XCTest
@testable import VMM

/// The kernel file as the loader reads it: pread at any offset, nothing past
/// the end, and only regular files.
final class KernelFileTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "kernelfile-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func testReadsRangesAndNothingPastTheEnd() throws {
        let path = dir + "/k"
        let bytes = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        let file = KernelFile(try ReadOnlyFile(path))
        XCTAssertEqual(file.count, 10_000)
        XCTAssertEqual(file.read(0, 4), Array(bytes[0..<4]))
        XCTAssertEqual(file.read(9_990, 10), Array(bytes[9_990...]))
        XCTAssertEqual(file.read(10_000, 0), [])
        XCTAssertNil(file.read(9_990, 11))
        XCTAssertNil(file.read(10_001, 0))
        XCTAssertNil(file.read(UInt64.max, 1))
        XCTAssertNil(file.read(0, -1))
    }

    func testAFileCutShortAfterOpeningReadsAsMissing() throws {
        let path = dir + "/k"
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(repeating: 7, count: 8192)))
        let file = KernelFile(try ReadOnlyFile(path))
        XCTAssertTrue(truncate(path, 100) == 0)
        XCTAssertEqual(file.count, 8192, "the size is the one seen at open")
        XCTAssertEqual(file.read(0, 100), [UInt8](repeating: 7, count: 100))
        XCTAssertNil(file.read(0, 101), "the bytes are gone: nil, not zeros")
    }

    func testOnlyRegularFiles() throws {
        XCTAssertThrowsError(try ReadOnlyFile(dir)) { XCTAssertTrue("\($0)".contains("not a regular file"), "\($0)") }
        XCTAssertThrowsError(try ReadOnlyFile("/dev/null")) { XCTAssertTrue("\($0)".contains("not a regular file"), "\($0)") }
        XCTAssertThrowsError(try ReadOnlyFile(dir + "/missing")) { XCTAssertTrue("\($0)".contains("ENOENT") || "\($0)".contains("No such"), "\($0)") }
        let path = dir + "/big"
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(repeating: 0, count: 4097)))
        XCTAssertThrowsError(try ReadOnlyFile(path, limit: 4096)) { XCTAssertTrue("\($0)".contains("larger than 4096 bytes"), "\($0)") }
    }
}
