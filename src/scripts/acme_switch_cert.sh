# Switches a certificate's link in the store to its new version (`version`,
# written beside the old ones) and removes the old versions. `certs` is the
# store's certs directory, `name` the certificate's, `marker` the reload
# still owed to the web server. It runs after the install's `set -e`: a failed
# `cd` stops it.
# shellcheck disable=SC2164
cd {{certs}}
link={{name}}
# A store from before versions: its directory becomes a version too.
if [ -d "$link" ] && [ ! -L "$link" ]; then
  mkdir -p .versions/{{name}}
  mv -T "$link" .versions/{{name}}/0
fi
# Owed from the switch on, so a run cut off before its reload still reloads.
: > {{marker}}
ln -sfn {{version}} ".$link.new"
mv -T ".$link.new" "$link"
for old in .versions/{{name}}/*; do
  [ "$old" = {{version}} ] || rm -rf -- "$old"
done
