# Images for the Helm chart: `docker build --target supernode -t <repo>:<tag>-supernode .` and
# `--target dfdaemon -t <repo>:<tag>-dfdaemon .` (same for podman/buildah).
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.json tsconfig.base.json ./
COPY shared/package.json shared/
COPY peer/package.json peer/
COPY supernode/package.json supernode/
COPY dfdaemon/package.json dfdaemon/
COPY dfget/package.json dfget/
COPY sim/package.json sim/
RUN npm ci --no-audit --no-fund
COPY shared shared
COPY peer peer
COPY supernode supernode
COPY dfdaemon dfdaemon
COPY dfget dfget
RUN npx tsc -b shared peer supernode dfdaemon dfget && npm prune --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules node_modules
COPY --from=build /src/shared/package.json shared/
COPY --from=build /src/shared/dist shared/dist
COPY --from=build /src/peer/package.json peer/
COPY --from=build /src/peer/dist peer/dist
COPY --from=build /src/supernode/package.json supernode/
COPY --from=build /src/supernode/dist supernode/dist
COPY --from=build /src/dfdaemon/package.json dfdaemon/
COPY --from=build /src/dfdaemon/dist dfdaemon/dist
COPY --from=build /src/dfget/package.json dfget/
COPY --from=build /src/dfget/dist dfget/dist
RUN ln -s /app/dfget/dist/cli.js /usr/local/bin/dfget && chmod +x /app/dfget/dist/cli.js \
 && ln -s /app/supernode/dist/dfctl.js /usr/local/bin/dfctl && chmod +x /app/supernode/dist/dfctl.js

FROM runtime AS supernode
EXPOSE 8002
VOLUME /var/lib/damselfly/supernode
ENTRYPOINT ["node", "--max-semi-space-size=2", "/app/supernode/dist/cli.js"]

FROM runtime AS dfdaemon
EXPOSE 65001 65002 40901
VOLUME /var/lib/damselfly/dfdaemon
ENTRYPOINT ["node", "--max-semi-space-size=2", "/app/dfdaemon/dist/cli.js"]
