import Synchronization
import VFIOUser

/// What a vfio-user server sends this client: a few DMA windows (from the
/// input), then a stream of messages, each decoded by its command's decoder
/// as the client would; DMA_READ/DMA_WRITE are served from the windows.
/// The windows' memory traps on any access outside itself, so a check that
/// let a request through past a window's end is a crash here.
enum VFIOUserTarget {
    /// Memory that refuses (traps on) anything outside its bytes.
    final class StrictMemory: VFIOUserDMAMemory {
        let bytes: Mutex<[UInt8]>
        let size: Int
        init(size: Int) {
            self.size = size
            bytes = Mutex([UInt8](repeating: 0, count: size))
        }
        func read(at offset: UInt64, count: Int) -> [UInt8]? {
            precondition(count >= 0 && offset <= UInt64(size) && UInt64(count) <= UInt64(size) - offset, "read outside the window")
            return bytes.withLock { Array($0[Int(offset)..<(Int(offset) + count)]) }
        }
        func write(at offset: UInt64, _ data: [UInt8]) -> Bool {
            precondition(offset <= UInt64(size) && UInt64(data.count) <= UInt64(size) - offset, "write outside the window")
            bytes.withLock { $0.replaceSubrange(Int(offset)..<(Int(offset) + data.count), with: data) }
            return true
        }
    }

    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        var table = VFIOUserDMATable(maxWindows: 4)
        for _ in 0..<Int(input.u8() % 4) {
            let address = input.u64() & 0xFFFF_FFFF_FFFF_F000 | UInt64(input.u8() & 1) * 0xFFFF_FFFF_FFFF_0000
            let size = UInt64(input.u16() & 0x1FFF) + 1 // up to 8 KiB: the checks, not the copies, are what is fuzzed
            let flags = VFIOUserDMAFlags(rawValue: UInt32(input.u8() & 3))
            try? table.add(VFIOUserDMAWindow(address: address, size: size, flags: flags,
                                             memory: StrictMemory(size: Int(size)), passedFD: false))
        }
        let maxTransfer = UInt64(input.u16()) + 1
        while !input.isEmpty {
            let head = input.bytes(VFIOUserHeader.size)
            let payload = input.bytes(Int(input.u16() % 2048))
            guard let header = try? VFIOUserHeader.decode(head) else { continue }
            switch VFIOUserCommand(rawValue: header.command) {
            case .dmaRead, .dmaWrite:
                let write = header.command == VFIOUserCommand.dmaWrite.rawValue
                if case let .served(reply, bytes)? = try? VFIOUserDMATable.Answer.serve(payload: payload, write: write,
                                                                                        table: table, maxTransfer: maxTransfer) {
                    precondition(bytes <= maxTransfer, "served over the transfer limit")
                    precondition(reply.count == VFIOUserDMAAccess.fixedSize + (write ? 0 : Int(bytes)), "reply of the wrong size")
                }
            case .version:
                if let v = try? VFIOUserVersion.decode(payload), let json = v.json { _ = try? VFIOUserCapabilities.parse(json) }
            case .deviceGetInfo: _ = try? VFIOUserDeviceInfo.decode(payload)
            case .deviceGetRegionInfo:
                if let info = try? VFIOUserRegionInfo.decode(payload) {
                    for a in info.sparseAreas ?? [] { precondition(a.offset <= info.size && a.size <= info.size - a.offset, "area outside the region") }
                }
            case .deviceGetIRQInfo: _ = try? VFIOUserIRQInfo.decode(payload)
            case .regionRead, .regionWrite: _ = try? VFIOUserRegionAccess.decode(payload, what: "REGION")
            case .dmaMap:
                if let m = try? VFIOUserDMAMap.decode(payload), m.size <= 1 << 13 {
                    try? table.add(VFIOUserDMAWindow(address: m.address, size: m.size, flags: m.flags,
                                                     memory: StrictMemory(size: Int(m.size)), passedFD: false))
                }
            case .dmaUnmap:
                if let u = try? VFIOUserDMAUnmap.decode(payload) { table.remove(address: u.address, size: u.size) }
            default:
                break
            }
        }
    }
}
