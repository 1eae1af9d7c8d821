# watch_gather.sh: everything one `vpsup watch --local` run looks at, for
# every app on the host, in one exec (watch::gather parses it): each site's
# health path through this host's own nginx (its name as SNI and Host), the
# certificate nginx serves for it, the apps' containers (each app's project
# and its serving slot's, from Docker's API), the disks of / and Docker's
# data, Docker's build cache, the renewal service's last result, a pending
# reboot, and the kernel's OOM kill counter; then the backup parts
# (backup::status). What concerns the whole host is looked at once,
# whatever the number of apps: every process started costs, the more so
# under emulation. Each part starts with a marker line; a part whose tool
# is missing stays empty.
# shellcheck disable=SC2016
marker={{marker}}
part() { printf '\n%s %s\n' "$marker" "$1"; }
# Each site's health path through this host's own nginx (its name as SNI
# and Host), every site in one curl: curl 7.88 and later also write the
# certificate chain nginx served (%{certs}) under each answer.
# shellcheck disable=SC2046
set -- $(curl -V 2>/dev/null)
case ${2:-} in
  [0-6].* | 7.[0-9].* | 7.[0-7][0-9].* | 7.8[0-7].*) certs= ;;
  *) certs='%{certs}' ;;
esac
{{sites_curl}}
# An older curl: the certificate from openssl, site by site (its app, its
# name, its health path, nginx's HTTPS address).
if [ -z "$certs" ]; then
  set -- {{sites}}
  while [ $# -ge 5 ]; do
    part "certificate $1 $2"
    # timeout: a handshake that never ends must not hold the run (and its alerts).
    timeout 15 openssl s_client -connect "$4:$5" -servername "$2" </dev/null 2>/dev/null |
      openssl x509 2>/dev/null
    shift 5
  done
fi
# The compose projects of each app's containers, `app<TAB>project` a line:
# its own (the settings' name for it; the parser reads the one its current
# release runs as from the part `release <app>`, its metadata), and the slot
# nginx serves, where its site services run (deploy::switch). The other
# slot holds nothing, or a failed deploy's leftovers: never reported.
app_projects() {
  set -- {{projects}}
  while [ $# -ge 6 ]; do
    printf '%s\t%s\n' "$1" "$2"
    case "$(head -n 1 "$4" 2>/dev/null)" in
      blue) printf '%s\t%s\n' "$1" "$5" ;;
      green) printf '%s\t%s\n' "$1" "$6" ;;
    esac
    shift 6
  done
}
current_releases() {
  set -- {{projects}}
  while [ $# -ge 6 ]; do
    if [ -f "$3" ]; then
      part "release $1"
      # read, not cat: no process per app
      while IFS= read -r line || [ -n "$line" ]; do printf '%s\n' "$line"; done <"$3"
    fi
    shift 6
  done
}
projects=$(app_projects)
# Docker's API through its socket, one JSON answer a line (`error ...` when
# there was none): curl is a small C program, where each `docker` command
# starts a Go runtime, about a second of CPU under emulation.
docker_api() {
  answer=$(timeout 30 curl -sS --unix-socket {{docker_socket}} -w '\n' "$@" 2>&1)
  case $? in
    0) printf '%s\n' "$answer" ;;
    124) echo 'error Docker did not answer within 30 s' ;;
    *) echo "error $(printf '%s\n' "$answer" | grep -m 1 '^curl:' || echo 'curl failed')" ;;
  esac
}
root=
if [ -n "$projects" ]; then
  part projects
  printf '%s\n' "$projects"
  current_releases
  part containers
  if [ ! -S {{docker_socket}} ]; then
    echo 'error Docker is not running (no '{{docker_socket}}')'
  else
    # Every compose container (a label filter names one key, so one list
    # cannot ask for several projects: the parser keeps the apps' own),
    # then each one inspected, in one curl: the list's "Id"s (a label of
    # that name would add an id that is no container's: "No such
    # container", skipped as below). A container gone since the list
    # (a one-off run, a slot being stopped) answers "No such container".
    listed=$(docker_api 'http://docker/containers/json?all=1&filters=%7B%22label%22%3A%5B%22com.docker.compose.project%22%5D%7D')
    printf '%s\n' "$listed"
    ids=$(printf '%s\n' "$listed" | grep -o '"Id": *"[0-9a-f]*"' | cut -d '"' -f 4)
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2046,SC2086
      docker_api $(printf 'http://docker/containers/%s/json\n' $ids)
    fi
  fi
  # Docker's data directory and build cache, asked at most hourly (sizing
  # the build cache walks it). Kept only when both answered: an answer that
  # did not come is asked again next run.
  docker_cache={{docker_cache}}
  if [ -z "$(find "$docker_cache" -mmin -60 2>/dev/null)" ]; then
    facts=$(docker_api http://docker/info 'http://docker/system/df?type=build-cache')
    # 0600: /info tells registries and proxies.
    if [ "$(printf '%s\n' "$facts" | grep -c -e '"DockerRootDir":' -e '"BuildCache":')" = 2 ] &&
      (umask 077 && mkdir -p "$(dirname "$docker_cache")" &&
        printf '%s\n' "$facts" >"$docker_cache.$$"); then
      mv -f "$docker_cache.$$" "$docker_cache"
    fi
  fi
  part docker
  cat "$docker_cache" 2>/dev/null
  root=$(sed -n 's/.*"DockerRootDir":"\([^"]*\)".*/\1/p' "$docker_cache" 2>/dev/null)
fi
part disks
df -Pk / ${root:+"$root"} 2>/dev/null
part renewal
systemctl show -p LoadState -p Result -p ExecMainExitTimestamp {{renew_service}} 2>/dev/null
part reboot
if [ -f /var/run/reboot-required ]; then
  echo required
  cat /var/run/reboot-required.pkgs 2>/dev/null
fi
part oom
cat /proc/sys/kernel/random/boot_id 2>/dev/null
grep '^oom_kill ' /proc/vmstat 2>/dev/null
{{backups}}
