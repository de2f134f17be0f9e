#!/usr/bin/env python3
"""Linker wrapper: lay out the spotter binary's code with the functions that run first.

Why (issue 21, peak RSS): the kernel maps the whole 64 KiB around a code fault when those pages
are cached, so functions that run, scattered among ones that never do, keep most of `.text`
resident (9.6 of 12.3 MiB on the x86 release build). Placed together, they need a few MiB.

How: cargo calls this as the linker, through cross/ld/<driver> (see .cargo/config.toml and
cross/config.toml), with the real compiler driver as the first argument. For the `spotter`
binary (output `.../deps/spotter-<hash>`, not linking libtest) it maps the names in
cross/hot-functions.txt (demangled, without hashes; made by benches/py/code_pages.py) to the
symbols of this link's inputs (readelf, c++filt), writes them in that order next to the output
(`<output>.order`), and links with lld's `--symbol-ordering-file`. x86_64 links with the
toolchain's rust-lld already; for other targets the driver is given `-fuse-ld=lld` and the
toolchain's gcc-ld directory, so the same rust-lld links them (GNU ld has no ordering option).
Every other link (build scripts, test binaries) goes to the driver unchanged.

The order only moves code: a list that no longer matches costs RSS, not correctness. If the
mapping fails the link goes on without it and says why on stderr; `link.py --check BINARY`
(run by tests/daemon on the built binary) fails when the listed functions are not first.
"""

import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LIST = os.path.join(HERE, "hot-functions.txt")
ORDERED = re.compile(r"/deps/spotter-[0-9a-f]+$")


def clean(demangled):
    """A demangled name without what changes between builds, targets and toolchains: the
    legacy `::h<16 hex>` suffix, v0 crate disambiguators `[<16 hex>]`, and LLVM's local-symbol
    suffixes (`.llvm.<n>`, `.cold`)."""
    name = re.sub(r"\[[0-9a-f]{16}\]", "", demangled)
    name = re.sub(r"::h[0-9a-f]{16}$", "", name)
    return re.sub(r"\.(llvm\.\d+|cold(\.\d+)?)$", "", name)


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    if len(lines) != len(names):
        raise RuntimeError("c++filt returned a different number of names")
    return lines


def inputs(args):
    """The object files and archives of the link: file arguments, and `-l` names found as
    static libraries in the `-L` directories."""
    files, dirs, libs = [], [], []
    it = iter(range(len(args)))
    for i in it:
        a = args[i]
        if a == "-L" and i + 1 < len(args):
            dirs.append(args[i + 1])
            next(it, None)
        elif a.startswith("-L"):
            dirs.append(a[2:])
        elif a == "-l" and i + 1 < len(args):
            libs.append(args[i + 1])
            next(it, None)
        elif a.startswith("-l"):
            libs.append(a[2:])
        elif a.endswith((".o", ".a", ".rlib")) and os.path.isfile(a):
            files.append(a)
    for lib in libs:
        name = lib.split(":", 1)[-1]  # -l static:name, -l:libname.a
        cands = [name] if name.endswith(".a") else [f"lib{name}.a"]
        for d in dirs:
            hit = next((os.path.join(d, c) for c in cands if os.path.isfile(os.path.join(d, c))), None)
            if hit:
                files.append(hit)
                break
    return files


def functions(paths):
    """(address, size, mangled name) of the functions defined in PATHS (objects, archives or a
    linked binary; any architecture), from their `.symtab`. readelf, not nm: binutils' nm
    hands the standard library's rlib members to its LLVM plugin, fails, and lists nothing."""
    out = subprocess.run(["readelf", "-sW", *paths], capture_output=True, text=True)
    rows, table = [], None
    for line in out.stdout.splitlines():
        if line.startswith("Symbol table '"):
            table = line.split("'")[1]
            continue
        f = line.split()
        if table == ".symtab" and len(f) >= 8 and f[3] == "FUNC" and f[6] != "UND":
            rows.append((int(f[1], 16), int(f[2], 0), f[7]))
    if not rows:
        raise RuntimeError(f"readelf found no functions in {len(paths)} file(s): {out.stderr.strip()[:300]}")
    return rows


def named_functions(paths):
    """(address, size, name without hashes) of the functions of nonzero size in PATHS."""
    rows = [r for r in functions(paths) if r[1] > 0]
    return [(a, n, clean(d)) for (a, n, _), d in zip(rows, demangle([r[2] for r in rows]))]


def list_names():
    """The names in the list, in its order (comment lines skipped)."""
    with open(LIST, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]


def write_order(args, out):
    wanted = list_names()
    syms = sorted({name for _, _, name in functions(inputs(args))})
    by_name = {}
    for mangled, demangled in zip(syms, demangle(syms)):
        by_name.setdefault(clean(demangled), []).append(mangled)
    order, found = [], 0
    for name in wanted:
        hits = by_name.get(name)
        if hits:
            found += 1
            order.extend(hits)
    path = out + ".order"
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(order) + "\n")
    return path, found, len(wanted), len(order)


def gcc_ld():
    """The toolchain's gcc-ld directory (its ld.lld runs rust-lld)."""
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout
    host = re.search(r"^host: (\S+)$", subprocess.run(["rustc", "-vV"], capture_output=True, text=True,
                                                      check=True).stdout, re.M).group(1)
    path = os.path.join(sysroot.strip(), "lib", "rustlib", host, "bin", "gcc-ld")
    if not os.path.isfile(os.path.join(path, "ld.lld")):
        raise RuntimeError(f"no ld.lld in {path}")
    return path


def check(binary):
    """Whether BINARY has the listed functions first in its code: at least half of the list is
    in it, and at least 85 % of the listed functions' bytes lie in the first 1.1 times as many
    bytes of `.text` (a few listed functions sit elsewhere whatever the order: libc's, and in a
    dev build the standard library's when it comes from an archive the mapping cannot read).
    Prints the figures; returns the exit status."""
    wanted = set(list_names())
    code = named_functions([binary])
    listed = [c for c in code if c[2] in wanted]
    if not listed:
        print(f"link.py: none of the {len(wanted)} listed functions is in {binary}", file=sys.stderr)
        return 1
    found = len({c[2] for c in listed})
    total = sum(n for _, n, _ in listed)
    start = min(a for a, _, _ in code)
    first = sum(n for a, n, _ in listed if a < start + 1.1 * total)
    print(f"link.py: {found} of {len(wanted)} listed functions in {binary}: {total / 2**20:.2f} MiB, "
          f"{100 * first / total:.0f} % of it in the first {1.1 * total / 2**20:.2f} MiB of code")
    ok = found * 2 >= len(wanted) and first >= 0.85 * total
    return 0 if ok else 1


def main():
    if sys.argv[1:2] == ["--check"] and len(sys.argv) == 3:
        sys.exit(check(sys.argv[2]))
    driver, args = sys.argv[1], sys.argv[2:]
    out = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "-o"), "")
    extra = []
    # A response file (@file, used for very long command lines) is not read here.
    # The library's test binary has the same output name: it links libtest, and needs no order.
    test = any(re.search(r"/libtest-[0-9a-f]+\.rlib$", a) for a in args)
    if ORDERED.search(out) and not test and os.path.isfile(LIST) and not any(a.startswith("@") for a in args):
        try:
            path, found, wanted, syms = write_order(args, out)
            extra = [f"-Wl,--symbol-ordering-file={path}", "-Wl,--no-warn-symbol-ordering"]
            if "-fuse-ld=lld" not in args:
                extra += ["-fuse-ld=lld", "-B" + gcc_ld()]
            if found * 2 < wanted:
                print(f"link.py: only {found} of the {wanted} functions in {LIST} are in this link: "
                      "regenerate the list (benches/py/code_pages.py)", file=sys.stderr)
        except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
            print(f"link.py: linking {out} without a function order: {e}", file=sys.stderr)
            extra = []
    os.execvp(driver, [driver, *args, *extra])


if __name__ == "__main__":
    main()
