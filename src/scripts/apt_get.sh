# vpsup_apt_get ARGS...: apt-get without prompts, with stdin closed (scripts
# arrive on stdin; a maintainer script must not eat them), and with a bounded
# wait for locks. `apt-get install` waits for the dpkg lock itself
# (DPkg::Lock::Timeout); `apt-get update` and the download lock do not wait,
# so lock failures are retried here until the same deadline. stderr is kept to
# recognise a lock failure, then passed on. needrestart (installed on Ubuntu)
# is suspended: it would ask which services to restart, or restart them
# itself, sshd too, in the middle of a run that is changing sshd; init's
# handlers restart what it changes, and a pending reboot is `vpsup watch`'s.
# Filled in by modules::apt (`timeout`: seconds); the change's steps follow.
set -e
vpsup_apt_err=$(mktemp)
trap 'rm -f -- "$vpsup_apt_err"' EXIT
vpsup_lock_holder() {
  ino=$(stat -c %i -- "$1" 2>/dev/null) || ino=
  pid=$(awk -v ino="$ino" '$2 != "->" && $5 > 0 { n = split($6, f, ":"); if (ino != "" && f[n] == ino) { print $5; exit } }' /proc/locks 2>/dev/null) || pid=
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ]; then
    printf 'process %s (%s)' "$pid" "$(tr '\0' ' ' < "/proc/$pid/cmdline" | sed 's/ *$//')"
  else
    printf 'another process (often unattended-upgrades, right after boot)'
  fi
}
vpsup_apt_get() {
  deadline=$(( $(date +%s) + {{timeout}} ))
  waiting=
  repaired=
  while :; do
    rc=0
    DEBIAN_FRONTEND=noninteractive APT_LISTCHANGES_FRONTEND=none NEEDRESTART_SUSPEND=1 apt-get -y -o DPkg::Lock::Timeout={{timeout}} -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" </dev/null 2>"$vpsup_apt_err" || rc=$?
    cat "$vpsup_apt_err" >&2
    [ "$rc" -ne 0 ] || return 0
    # A run killed halfway (a dropped connection, Ctrl-C) leaves dpkg
    # half-configured; apt refuses to go on until that is finished.
    if [ -z "$repaired" ] && grep -q 'dpkg was interrupted' "$vpsup_apt_err"; then
      echo "apt: an earlier package run was interrupted; finishing it (dpkg --configure -a)" >&2
      DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 dpkg --configure -a --force-confdef --force-confold </dev/null
      repaired=1
      continue
    fi
    lock=$(sed -n -e 's/^E: Could not get lock \([^ ]*[^ .]\).*/\1/p' -e 's/^E: Unable to acquire the dpkg frontend lock (\([^)]*\)).*/\1/p' "$vpsup_apt_err" | head -n 1)
    [ -n "$lock" ] || exit "$rc"
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "apt: $lock is still held after {{timeout}} s by $(vpsup_lock_holder "$lock"); retry later, or raise lock_timeout" >&2
      exit "$rc"
    fi
    if [ -z "$waiting" ]; then
      echo "apt: $lock is held by $(vpsup_lock_holder "$lock"); waiting up to {{timeout}} s" >&2
      waiting=1
    fi
    sleep 2
  done
}
