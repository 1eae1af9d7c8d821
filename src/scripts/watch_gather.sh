# watch_gather.sh: everything one `vpsup watch --local` run looks at, for
# every app on the host, in one exec (watch::gather parses it): each site's
# health path through this host's own nginx (its name as SNI and Host), the
# certificate nginx serves for it, the apps' containers (each app's project
# and its serving slot's), the disks of / and Docker's data, Docker's build
# cache, the renewal service's last result, a pending reboot, and the
# kernel's OOM kill counter; then the backup parts (backup::status). What
# concerns the whole host is looked at once, whatever the number of apps:
# under emulation each docker command costs a second of CPU. Each part
# starts with a marker line; a part whose tool is missing stays empty.
# shellcheck disable=SC2016
marker={{marker}}
part() { printf '\n%s %s\n' "$marker" "$1"; }
# Each site: its app, its name, its health path, nginx's HTTPS address.
set -- {{sites}}
while [ $# -ge 5 ]; do
  app=$1
  name=$2
  path=$3
  nginx_host=$4
  nginx_port=$5
  shift 5
  part "site $app $name"
  curl -sS -k -o /dev/null -w '%{http_code}\n' --max-time 10 \
    --resolve "$name:$nginx_port:$nginx_host" "https://$name:$nginx_port$path" 2>&1
  part "certificate $app $name"
  # timeout: a handshake that never ends must not hold the run (and its alerts).
  timeout 15 openssl s_client -connect "$nginx_host:$nginx_port" -servername "$name" </dev/null 2>/dev/null |
    openssl x509 2>/dev/null
done
# The compose projects of each app's containers, `app<TAB>project` a line:
# its own, and the slot nginx serves, where its site services run
# (deploy::switch). The other slot holds nothing, or a failed deploy's
# leftovers: never reported.
app_projects() {
  set -- {{projects}}
  while [ $# -ge 5 ]; do
    printf '%s\t%s\n' "$1" "$2"
    case "$(head -n 1 "$3" 2>/dev/null)" in
      blue) printf '%s\t%s\n' "$1" "$4" ;;
      green) printf '%s\t%s\n' "$1" "$5" ;;
    esac
    shift 5
  done
}
projects=$(app_projects)
root=
if [ -n "$projects" ]; then
  part projects
  printf '%s\n' "$projects"
  part containers
  if ! command -v docker >/dev/null 2>&1; then
    echo 'error docker is not installed'
  elif ! ids=$(timeout 30 docker ps -aq --filter label=com.docker.compose.project 2>&1); then
    echo "error $ids" | head -n 1
  elif [ -n "$ids" ]; then
    # Every compose container, in one `docker ps` and one `docker inspect`
    # (label filters on one key must all match, so one `docker ps` cannot
    # ask for several projects): the parser keeps the apps' projects' own.
    # A container gone since `docker ps` (a one-off run, a slot being
    # stopped) is only missing here; anything else inspect says is an error.
    errors=$(mktemp) || errors=/dev/null
    # shellcheck disable=SC2086
    inspected=$(timeout 30 docker inspect --format '{{index .Config.Labels "com.docker.compose.project"}}	{{index .Config.Labels "com.docker.compose.service"}}	{{.Name}}	{{.State.Status}}	{{if .State.Health}}{{.State.Health.Status}}{{ else }}-{{ end }}	{{.RestartCount}}	{{.State.ExitCode}}	{{.State.StartedAt}}' $ids 2>"$errors")
    status=$?
    other=$(grep -vi 'no such object' "$errors" 2>/dev/null | head -n 1)
    [ "$errors" = /dev/null ] || rm -f "$errors"
    if [ "$status" = 124 ]; then
      echo 'error docker inspect did not answer within 30 s'
    elif [ -n "$other" ]; then
      echo "error $other"
    else
      printf '%s\n' "$inspected"
    fi
  fi
  # Docker's data directory and build cache, asked at most hourly: `docker
  # system df` sizes every image, container and volume. Kept only when both
  # came back (an answer that timed out is asked again next run).
  docker_cache={{docker_cache}}
  if [ -z "$(find "$docker_cache" -mmin -60 2>/dev/null)" ] &&
    root=$(timeout 30 docker info --format '{{.DockerRootDir}}' 2>/dev/null); then
    build_cache=$(timeout 30 docker system df --format '{{.Type}}	{{.Size}}' 2>/dev/null | grep '^Build Cache' | cut -f2)
    if [ -n "$root" ] && [ -n "$build_cache" ] && (umask 077 && mkdir -p "$(dirname "$docker_cache")") &&
      printf 'root %s\nbuild-cache %s\n' "$root" "$build_cache" >"$docker_cache.$$"; then
      mv -f "$docker_cache.$$" "$docker_cache"
    fi
  fi
  part docker
  cat "$docker_cache" 2>/dev/null
  root=$(sed -n 's/^root //p' "$docker_cache" 2>/dev/null)
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
