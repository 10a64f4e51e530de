import Foundation
import HostSys
import XCTest

/// The vCPU and console-input threads are `KickableThread`s: the OS must see
/// their names (top -H, gdb, /proc), as it sees the I/O threads'.
final class KickableThreadTests: XCTestCase {
    func testTheOSSeesTheThreadsName() {
        let release = DispatchSemaphore(value: 0)
        let t = KickableThread(name: "kt-named") { release.wait() }
        defer {
            release.signal()
            t.join()
        }
        XCTAssertTrue(eventually { threadNames().contains("kt-named") }, "threads: \(threadNames())")
    }

    /// Linux keeps 15 bytes of a thread's name: a longer one is cut there,
    /// not dropped.
    func testALongNameIsCutToWhatLinuxKeeps() {
        let release = DispatchSemaphore(value: 0)
        let t = KickableThread(name: "kt-a-rather-long-name") { release.wait() }
        defer {
            release.signal()
            t.join()
        }
        XCTAssertTrue(eventually { threadNames().contains("kt-a-rather-lon") }, "threads: \(threadNames())")
    }
}
