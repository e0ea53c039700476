-- wrk script: unique v2024-01-01 webhook deliveries (a points_added sample payload), for
-- bench/README.md, "HTTP benchmark". Unsigned: run `custate serve` without CUSTATE_WEBHOOK_SECRET.
counter = 0
local f = io.open("tests/data/samples/customer.voucher.loyalty_card.points_added.json", "r")
local data = f:read("*a"); f:close()
data = data:gsub("%s+\n", "\n")
request = function()
  counter = counter + 1
  local id = string.format("evcus_wrk_%d_%d", math.random(1, 1000000000), counter)
  local body = '{"id":"evt_' .. id .. '","project_id":"proj_1","created_at":"2024-03-11T15:27:45.000Z","type":"customer.voucher.loyalty_card.points_added","source":{"object_id":"x"},"event":{"id":"' .. id .. '","type":"customer.voucher.loyalty_card.points_added","created_at":"2024-03-11T15:27:44.884Z","entity_id":"cust_' .. (counter % 500) .. '"},"data":' .. data .. '}'
  return wrk.format("POST", "/webhooks/voucherify", {["Content-Type"]="application/json"}, body)
end
