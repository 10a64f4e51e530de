import FuzzTargets
#if SWIFTVMM_LIBFUZZER
import Foundation

// Built by scripts/fuzz with -sanitize=fuzzer,address. SwiftPM names an
// executable's entry point after its module (its `main` is an alias), so the
// entry is this function, which hands over to libFuzzer's driver.
// SWIFTVMM_FUZZ_TARGET names the target.
nonisolated(unsafe) var target: ([UInt8]) -> Void = { _ in }

@_silgen_name("LLVMFuzzerRunDriver")
func runDriver(_ argc: UnsafeMutablePointer<CInt>,
               _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
               _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

@_cdecl("swiftvmm_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    let name = ProcessInfo.processInfo.environment["SWIFTVMM_FUZZ_TARGET"] ?? ""
    guard let t = FuzzTargets.named(name) else {
        FileHandle.standardError.write(Data("swiftvmm-fuzz: SWIFTVMM_FUZZ_TARGET=\(name) names no target; targets: \(FuzzTargets.all.map(\.name).joined(separator: " "))\n".utf8))
        return 2
    }
    target = t
    var count = argc
    var vector = argv
    return runDriver(&count, &vector) { data, size in
        target(size > 0 && data != nil ? Array(UnsafeBufferPointer(start: data, count: size)) : [])
        return 0
    }
}
#else
import Foundation

/// Without libFuzzer: `swiftvmm-fuzz TARGET FILE|DIRECTORY...` runs each input
/// once (a crash's reproducer, or a corpus), `swiftvmm-fuzz --list` names
/// the targets.
@main
struct Replay {
    static func main() {
        let args = Array(CommandLine.arguments.dropFirst())
        if args.first == "--list" {
            print(FuzzTargets.all.map(\.name).joined(separator: "\n"))
            return
        }
        guard args.count >= 2, let target = FuzzTargets.named(args[0]) else {
            FileHandle.standardError.write(Data("usage: swiftvmm-fuzz TARGET FILE|DIRECTORY... (swiftvmm-fuzz --list names the targets)\n".utf8))
            exit(64)
        }
        var runs = 0
        for path in args.dropFirst() {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                FileHandle.standardError.write(Data("swiftvmm-fuzz: \(path): no such file\n".utf8))
                exit(66)
            }
            let files = isDirectory.boolValue
                ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { path + "/" + $0 } : [path]
            for f in files {
                guard let data = FileManager.default.contents(atPath: f) else { continue }
                target([UInt8](data))
                runs += 1
            }
        }
        print("swiftvmm-fuzz: \(args[0]): \(runs) inputs ran")
    }
}
#endif
