# Adds each missing variable of `names` to the env file `file`, a random
# value of `length` letters and digits, and prints the names it created, one
# per line (never a value).
set -e
umask 077
mkdir -p "$(dirname {{file}})"
[ -e {{file}} ] || : > {{file}}
chmod 0600 {{file}}
for name in {{names}}; do
  if ! grep -q "^$name=" {{file}}; then
    value=$(tr -dc 'A-Za-z0-9' < /dev/urandom | head -c {{length}})
    [ ${#value} -eq {{length}} ] || { echo "could not read /dev/urandom" >&2; exit 1; }
    printf '%s=%s\n' "$name" "$value" >> {{file}}
    echo "$name"
  fi
done
