import Devices
import GuestMemory
import Synchronization
import Virtio
import XCTest

/// Bytes 0, 1, 2, ... (mod 256), continuing across calls.
final class CountingEntropy: EntropySource {
    private let state = Mutex<(next: UInt8, requests: [Int])>((0, []))

    var requests: [Int] { state.withLock { $0.requests } }

    func randomBytes(count: Int) -> [UInt8] {
        state.withLock { s in
            s.requests.append(count)
            return (0..<count).map { _ in defer { s.next &+= 1 }; return s.next }
        }
    }
}

/// Guest memory that claims an 8 GiB region but stores only what is written
/// (4 KiB pages in a dictionary): for chains larger than 4 GiB.
final class SparseMemory: GuestMemoryAccess {
    let size: UInt64
    private let pages = Mutex<[UInt64: [UInt8]]>([:])
    init(size: UInt64) { self.size = size }

    func contains(_ address: GuestAddress, length: UInt64) -> Bool {
        address.raw <= size && length <= size - address.raw
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at address: GuestAddress) throws {
        guard contains(address, length: UInt64(buffer.count)) else {
            throw GuestMemoryError.outOfRange(address: address.raw, length: UInt64(buffer.count))
        }
        pages.withLock { pages in
            for i in 0..<buffer.count {
                let a = address.raw + UInt64(i)
                buffer[i] = pages[a >> 12]?[Int(a & 0xFFF)] ?? 0
            }
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer, at address: GuestAddress) throws {
        guard contains(address, length: UInt64(bytes.count)) else {
            throw GuestMemoryError.outOfRange(address: address.raw, length: UInt64(bytes.count))
        }
        pages.withLock { pages in
            for i in 0..<bytes.count {
                let a = address.raw + UInt64(i)
                pages[a >> 12, default: [UInt8](repeating: 0, count: 4096)][Int(a & 0xFFF)] = bytes[i]
            }
        }
    }
}

/// Asserts that `body` throws exactly `expected`.
func XCTAssertVirtqueueError<T>(_ expected: VirtqueueError, _ body: @autoclosure () throws -> T,
                                _ message: @autoclosure () -> String = "",
                                file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try body(), message(), file: file, line: line) { error in
        XCTAssertEqual(error as? VirtqueueError, expected, message(), file: file, line: line)
    }
}
