HOST=${HOST:-localhost:8000}
ACCESS=$(curl -s -X POST $HOST/api/auth/token -H 'content-type: application/json' \
     -d '{"username":"teacher@harry.uz","password":"harry-demo"}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["access"])')
curl -s $HOST/api/me -H "Authorization: Bearer $ACCESS"       # profile, groups, topics
