#!/bin/sh
# PostgreSQL 17's client tools (pg_dump with lz4 and zstd) from Debian trixie, for bench.dump_formats --tools only.
#
#   sh bench/trixie-pg-tools.sh DEST      then   .venv/bin/python -m bench.dump_formats --tools DEST/bin
#
# Debian 12 packages PostgreSQL 15 only, and trixie's binaries need glibc 2.38 (this machine has 2.36): run
# normally they stop with "version `GLIBC_2.38' not found". So the packages are unpacked, not installed, next to
# trixie's own libc, and DEST/bin holds one wrapper per tool that starts it with trixie's loader. Nothing outside
# DEST changes; the product never uses these tools (its pods run the image of the server's major version).
set -eu
DEST=${1:?usage: sh bench/trixie-pg-tools.sh DEST}
MIRROR=http://deb.debian.org/debian
mkdir -p "$DEST/debs" "$DEST/root" "$DEST/bin"
curl -fsSL "$MIRROR/dists/trixie/main/binary-amd64/Packages.xz" | xz -d > "$DEST/debs/Packages"
for package in postgresql-client-17 libpq5 libldap2 libc6; do
    # The pool path of the package's one entry in trixie's index.
    path=$(awk -v want="$package" '/^Package: /{name=$2} /^Filename: /{if (name == want) print $2}' \
        "$DEST/debs/Packages" | head -n 1)
    [ -n "$path" ] || { echo "trixie has no package $package" >&2; exit 1; }
    curl -fsSL -o "$DEST/debs/$package.deb" "$MIRROR/$path"
    dpkg-deb -x "$DEST/debs/$package.deb" "$DEST/root"
    echo "$path"
done
LIB=$DEST/root/usr/lib/x86_64-linux-gnu
for tool in pg_dump pg_restore psql; do
    cat > "$DEST/bin/$tool" <<EOF
#!/bin/sh
exec $LIB/ld-linux-x86-64.so.2 --library-path $LIB:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu \
    $DEST/root/usr/lib/postgresql/17/bin/$tool "\$@"
EOF
    chmod +x "$DEST/bin/$tool"
done
rm -rf "$DEST/debs"
"$DEST/bin/pg_dump" --version
