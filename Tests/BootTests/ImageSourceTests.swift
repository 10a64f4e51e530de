import GuestMemory
import Synchronization
import XCTest
@testable import Boot

/// An image read through `ImageSource`: the parser reads only headers, the
/// loader copies the payload in chunks, and a file that changes under the
/// loader is an error that says so.
final class ImageSourceTests: XCTestCase {
    /// Bytes in memory that record every read and can be cut short later, as
    /// a file truncated by someone else would be.
    final class RecordingImage: ImageSource {
        let state: Mutex<(bytes: [UInt8], reads: [Int])>
        init(_ bytes: [UInt8]) { state = Mutex((bytes, [])) }
        var count: UInt64 { state.withLock { UInt64($0.bytes.count) } }
        func read(_ offset: UInt64, _ length: Int) -> [UInt8]? {
            state.withLock { s in
                s.reads.append(length)
                guard let start = Int(exactly: offset), start + length <= s.bytes.count else { return nil }
                return Array(s.bytes[start..<(start + length)])
            }
        }
        var reads: [Int] { state.withLock { $0.reads } }
        func truncate(to n: Int) { state.withLock { $0.bytes.removeSubrange(n...) } }
    }

    /// A bzImage with a 3 MiB + 16 bytes payload.
    func bigBzImage() -> (BzImageBuilder, [UInt8]) {
        var b = BzImageBuilder()
        b.payload = (0..<(3 << 20) + 16).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        return (b, b.build())
    }

    func testParsingReadsHeadersOnlyAndLoadingCopiesInChunks() throws {
        let (builder, bytes) = bigBzImage()
        let image = RecordingImage(bytes)
        let kernel = try KernelImage.parse(image)
        XCTAssertLessThan(image.reads.reduce(0, +), 4096, "the parser read more than the headers: \(image.reads)")
        XCTAssertEqual(kernel.loadedBytes, UInt64(builder.payload.count))

        let memory = try TestMemory.withHoles([(0, 64 * TestMemory.mib)])
        _ = try LinuxLoader.load(kernel: kernel, initrd: nil, cmdline: "console=ttyS0", vcpus: 1,
                                 memoryMap: GuestMemoryMap(ramBytes: 64 * TestMemory.mib), into: memory)
        XCTAssertEqual(try memory.bytes(0x10_0000, builder.payload.count), builder.payload)
        XCTAssertEqual(Array(image.reads.suffix(4)), [1 << 20, 1 << 20, 1 << 20, 16], "the payload is read 1 MiB at a time")
        XCTAssertEqual(image.reads.filter { $0 > 4096 }.count, 3, "and only once")
    }

    func testAnImageThatShrinksWhileLoadingIsAnError() throws {
        let (_, bytes) = bigBzImage()
        let image = RecordingImage(bytes)
        let kernel = try KernelImage.parse(image)
        image.truncate(to: bytes.count - (1 << 20))
        let memory = try TestMemory.withHoles([(0, 64 * TestMemory.mib)])
        XCTAssertThrowsError(try LinuxLoader.load(kernel: kernel, initrd: nil, cmdline: "console=ttyS0", vcpus: 1,
                                                  memoryMap: GuestMemoryMap(ramBytes: 64 * TestMemory.mib),
                                                  into: memory)) { error in
            XCTAssertTrue("\(error)".contains("the file changed or could not be read while it was loaded"), "\(error)")
        }
    }

    func testAnELFSegmentIsReadWhenLoaded() throws {
        let bytes = ELFBuilder().build()
        let image = RecordingImage(bytes)
        guard case let .elf(elf) = try KernelImage.parse(image) else { return XCTFail("not an ELF kernel") }
        let parsed = image.reads.count
        XCTAssertEqual(elf.segments[0].data.bytes, ELFBuilder().segments[0].data)
        XCTAssertEqual(image.reads.count, parsed + 1, "the segment's bytes are read only when asked for")
    }
}
