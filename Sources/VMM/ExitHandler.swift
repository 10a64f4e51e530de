import Devices
import KVM

/// What the vCPU loop does after an exit.
public enum ExitAction: Equatable {
    case resume
    case stop(StopReason)
}

/// Handles one vCPU exit against the buses. A plain function of (exit,
/// buses) so tests feed it made-up exits without KVM. Exit data goes through
/// a scratch copy (at most 8 bytes), never a pointer into the run page.
/// - Port I/O reads of nothing return 0xff bytes (an open ISA bus); writes to
///   nothing are dropped. `rep ins/outs` (count > 1) is handled element-wise.
/// - MMIO reads of nothing return 0xff bytes.
public func handleExit(_ exit: VCPUExit, vcpu: UInt32, pio: Bus, mmio: Bus) -> ExitAction {
    switch exit {
    case let .ioOut(port, size, data), let .ioIn(port, size, data):
        // decode() allows sizes 1, 2 and 4 only.
        guard (1...8).contains(size) else { return .stop(.vmmError("port I/O exit with \(size)-byte elements on vCPU \(vcpu)")) }
        let isOut: Bool
        if case .ioOut = exit { isOut = true } else { isOut = false }
        withScratch(size) { element in
            for start in stride(from: 0, through: data.count - size, by: size) {
                data.load(from: start, into: element)
                if isOut {
                    pio.write(UInt64(port), data: UnsafeRawBufferPointer(element))
                } else {
                    if !pio.read(UInt64(port), data: element) {
                        element.initializeMemory(as: UInt8.self, repeating: 0xFF)
                    }
                    data.store(UnsafeRawBufferPointer(element), at: start)
                }
            }
        }
        return .resume
    case let .mmioWrite(address, data):
        guard data.count <= 8 else { return .stop(.vmmError("MMIO exit with \(data.count) data bytes on vCPU \(vcpu)")) }
        withScratch(data.count) { value in
            data.load(from: 0, into: value)
            _ = mmio.write(address, data: UnsafeRawBufferPointer(value))
        }
        return .resume
    case let .mmioRead(address, data):
        guard data.count <= 8 else { return .stop(.vmmError("MMIO exit with \(data.count) data bytes on vCPU \(vcpu)")) }
        withScratch(data.count) { value in
            data.load(from: 0, into: value)
            if !mmio.read(address, data: value) {
                value.initializeMemory(as: UInt8.self, repeating: 0xFF)
            }
            data.store(UnsafeRawBufferPointer(value))
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
    case let .systemEvent(event):
        switch event {
        case .reset: return .stop(.reset)
        case .shutdown: return .stop(.powerOff)
        case .crash: return .stop(.tripleFault(vcpu: vcpu, rip: nil))
        case let .other(type): return .stop(.vmmError("unexpected KVM system event \(type) on vCPU \(vcpu)"))
        }
    case let .exception(n, code):
        return .stop(.vmmError("unexpected exception exit \(n) (error code \(code)) on vCPU \(vcpu)"))
    case let .unknown(reason):
        return .stop(.vmmError("unknown KVM exit reason \(reason) on vCPU \(vcpu)"))
    }
}

/// Runs `body` on `count` (at most 8) bytes of zeroed stack scratch.
private func withScratch(_ count: Int, _ body: (UnsafeMutableRawBufferPointer) -> Void) {
    var scratch: UInt64 = 0
    withUnsafeMutableBytes(of: &scratch) { s in
        // SAFETY: callers pass count <= 8, the size of `scratch`.
        body(UnsafeMutableRawBufferPointer(rebasing: s[0..<count]))
    }
}
