import Foundation
import HostSys
import Virtio
import XCTest
@testable import VMM

/// The VMM's glue between HostSys files and the Virtio backend protocols.
final class VirtioHostBackendTests: XCTestCase {
    func testBlockFileIsABlockBackend() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-vmm-blk-\(UUID().uuidString).img").path
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data((0..<1024).map { UInt8(truncatingIfNeeded: $0) })))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let backend: BlockBackend = try BlockFile(path: path, readOnly: true)
        XCTAssertEqual(backend.capacity, 1024)
        XCTAssertTrue(backend.isReadOnly)
        var buffer = [UInt8](repeating: 0, count: 4)
        try buffer.withUnsafeMutableBytes { try backend.read(at: 510, into: $0) }
        XCTAssertEqual(buffer, [254, 255, 0, 1])
    }

    func testTapDeviceIsANetBackend() {
        XCTAssertTrue((TapDevice.self as Any.Type) is NetBackend.Type)
    }
}
