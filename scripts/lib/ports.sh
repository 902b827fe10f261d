# Finding free loopback ports. Source this file.

# free_port: a loopback port that, with its successor, nothing listens on. Drawn below Linux's
# ephemeral range (32768+), where outgoing connections could already hold it.
free_port() {
    local p _
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null &&
            ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    echo "no free port pair found" >&2
    return 1
}
