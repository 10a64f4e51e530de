import Devices
import Foundation
import Synchronization

final class RecordingSink: MachineEventSink {
    private let recorded = Mutex<[MachineEvent]>([])
    var events: [MachineEvent] { recorded.withLock { $0 } }
    func machineEvent(_ event: MachineEvent) { recorded.withLock { $0.append(event) } }
}

final class NullDevice: BusDevice {
    func read(offset: UInt64, data: UnsafeMutableRawBufferPointer) {}
    func write(offset: UInt64, data: UnsafeRawBufferPointer) {}
}

extension BusDevice {
    func read(_ offset: UInt64, width: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0xAB, count: width)
        bytes.withUnsafeMutableBytes { read(offset: offset, data: $0) }
        return bytes
    }

    func readByte(_ offset: UInt64) -> UInt8 { read(offset, width: 1)[0] }

    func write(_ offset: UInt64, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { write(offset: offset, data: $0) }
    }

    func writeByte(_ offset: UInt64, _ value: UInt8) { write(offset, [value]) }
}
