import Devices
import KVM

/// What the vCPU loop does after an exit.
public enum ExitAction: Equatable {
    case resume
    case stop(StopReason)
}

/// Handles one vCPU exit against the buses. A plain function of (exit, run
/// page, buses) so tests feed it made-up exits without KVM.
/// - Port I/O reads of nothing return 0xff bytes (an open ISA bus); writes to
///   nothing are dropped. `rep ins/outs` (count > 1) is handled element-wise.
/// - MMIO reads of nothing return 0xff bytes.
public func handleExit(_ exit: VCPUExit, vcpu: UInt32, runPage: UnsafeMutableRawBufferPointer, pio: Bus, mmio: Bus) -> ExitAction {
    switch exit {
    case let .io(io):
        // decode() guaranteed dataOffset + size * count <= runPage.count.
        for i in 0..<io.count {
            let start = io.dataOffset + i * io.size
            let slice = UnsafeMutableRawBufferPointer(rebasing: runPage[start..<(start + io.size)])
            if io.isOut {
                pio.write(UInt64(io.port), data: UnsafeRawBufferPointer(slice))
            } else if !pio.read(UInt64(io.port), data: slice) {
                slice.initializeMemory(as: UInt8.self, repeating: 0xFF)
            }
        }
        return .resume
    case let .mmio(address, length, isWrite, data):
        if isWrite {
            data.withUnsafeBytes { _ = mmio.write(address, data: $0) }
        } else {
            let off = mmioDataOffset
            guard off + length <= runPage.count else { return .stop(.vmmError("MMIO exit with data outside the run page")) }
            let slice = UnsafeMutableRawBufferPointer(rebasing: runPage[off..<(off + length)])
            if !mmio.read(address, data: slice) {
                slice.initializeMemory(as: UInt8.self, repeating: 0xFF)
            }
        }
        return .resume
    case .interrupted, .irqWindowOpen:
        return .resume
    case .hlt:
        // With the in-kernel irqchip KVM handles HLT itself; seeing it means
        // the guest halted for good (e.g. `poweroff` without ACPI).
        return .stop(.guestHalted(vcpu: vcpu))
    case .shutdown:
        return .stop(.tripleFault(vcpu: vcpu, rip: nil))
    case let .failEntry(reason, cpu):
        return .stop(.vmmError("KVM could not enter vCPU \(vcpu) (hardware entry failure reason 0x\(String(reason, radix: 16)) on host CPU \(cpu))"))
    case let .internalError(sub, data):
        return .stop(.kvmInternalError(vcpu: vcpu, suberror: sub, data: data, rip: nil))
    case let .systemEvent(type):
        switch type {
        case SystemEventType.reset: return .stop(.reset)
        case SystemEventType.shutdown: return .stop(.powerOff)
        case SystemEventType.crash: return .stop(.tripleFault(vcpu: vcpu, rip: nil))
        default: return .stop(.vmmError("unexpected KVM system event \(type) on vCPU \(vcpu)"))
        }
    case let .exception(n, code):
        return .stop(.vmmError("unexpected exception exit \(n) (error code \(code)) on vCPU \(vcpu)"))
    case let .unknown(reason):
        return .stop(.vmmError("unknown KVM exit reason \(reason) on vCPU \(vcpu)"))
    }
}
