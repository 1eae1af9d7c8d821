# The one script that takes a host lock (or takes over a dead run's) and, once
# it is ours, runs `then_script`; see hostlock::acquire_script for what it
# prints. Under flock on the lock's parent directory (`guard`), so that two
# runs finding the same dead lock cannot both take it over. `lock` is the
# quoted lock directory, `steps` sets `running` to a live host step's pid.
{{guard}}
now=$(date +%s); age=0
boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || true)
if [ -d {{lock}} ]; then
  since=$(cat {{lock}}/since 2>/dev/null || echo "$now"); age=$((now - since))
  lease=$(cat {{lock}}/lease 2>/dev/null || true)
  case $lease in ''|*[!0-9]*) expired=- ;; *) expired=$((now - lease)) ;; esac
{{steps}}
  dead=
  if [ -n "$boot" ] && [ -s {{lock}}/boot ] && [ "$(cat {{lock}}/boot)" != "$boot" ]; then dead=restarted
  elif [ -n "$running" ]; then :
  elif [ -s {{lock}}/pid ] && [ ! -d "/proc/$(cat {{lock}}/pid)" ]; then dead=process-gone
  elif [ "$expired" != - ] && [ "$expired" -gt 0 ]; then dead="lease-expired $expired"{{by_age}}
  fi
  if [ -n "$dead" ]; then
    echo "taken-over $age $dead"
    owner=$(head -n 1 {{lock}}/owner 2>/dev/null); echo "${owner:-unknown}"
    rm -rf -- {{lock}}
  fi
fi
if mkdir {{lock}} 2>/dev/null; then
  token=$(cat /proc/sys/kernel/random/uuid)
  echo "$now" > {{lock}}/since
  echo "$boot" > {{lock}}/boot
  echo $((now + {{lease}})) > {{lock}}/lease
  {{pid}}echo "$token" > {{lock}}/token
  cat > {{lock}}/owner
  echo "acquired $token"
else
  echo "held $age $expired ${running:--}"
  owner=$(head -n 1 {{lock}}/owner 2>/dev/null); echo "${owner:-unknown}"
  exit 0
fi
exec 9<&-
{{then_script}}
